from cauce.cli.main import main

raise SystemExit(main())
