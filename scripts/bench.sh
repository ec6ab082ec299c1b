#!/usr/bin/env bash
# Run the benchmarks with their peers, from a fresh clone, in one command:
#
#     bash scripts/bench.sh [--quick] [NAME...]      # NAME: launch ingest train_overhead
#                                                    #       phases tune serve spark_launch ui
#                                                    #       predict pipeline
#                                                    #       (default: all)
#
# Makes .venv (scripts/setup.sh), installs the peers whose versions agree with the project's
# into it (requirements/bench.txt, pinned in requirements/constraints.txt), builds one pinned
# environment per peer that conflicts with them under .bench-envs/ (requirements/bench-ENV.txt,
# the same Python as .venv; rebuilt only when that file changes, or when the folder is gone),
# runs each named benchmark with its default settings (--quick: their smoke settings, through
# CAUCE_BENCH_QUICK=1), and writes benchmarks/results/latest.json and latest.md (the table of
# headline ratios and their aims, printed too). Exits 1 when a benchmark fails to run, never
# because a ratio missed its aim; 2 on bad arguments. A peer environment that cannot be built
# is reported in the table and its peer skipped.
#
# Environment: CAUCE_BENCH_OUT (default benchmarks/results), CAUCE_BENCH_ENVS (default
# .bench-envs), CAUCE_BENCH_NO_SETUP=1 (skip every install step: for tests).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(launch ingest train_overhead phases tune serve spark_launch ui predict pipeline)
#: Peer environments each benchmark needs (requirements/bench-ENV.txt).
declare -A ENVS_OF=([ingest]="petastorm ray" [serve]="kserve")
#: The variable through which a benchmark finds each environment's Python.
declare -A VAR_OF=([petastorm]=CAUCE_BENCH_PETASTORM [ray]=CAUCE_BENCH_RAY [kserve]=CAUCE_BENCH_KSERVE)

quick=0
names=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "error: unknown option $arg; usage: bash scripts/bench.sh [--quick] [NAME...]" >&2
            exit 2
            ;;
        *)
            if [[ " ${ALL[*]} " != *" $arg "* ]]; then
                echo "error: no benchmark named '$arg'; choose from: ${ALL[*]}" >&2
                exit 2
            fi
            names+=("$arg")
            ;;
    esac
done
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")

OUT=${CAUCE_BENCH_OUT:-benchmarks/results}
ENVS=${CAUCE_BENCH_ENVS:-.bench-envs}
PY=.venv/bin/python
mkdir -p "$OUT/logs"
rm -f "$OUT"/logs/*

pip_install() { # PYTHON ARGS...: pip quietly, without the notes about this machine's indexes
    local python=$1
    shift
    "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$@" \
        2> >(grep -v "^WARNING: Location 'file:" >&2)
}

venv_peers() { # the peers that agree with the project's versions, into .venv
    local stamp
    stamp=$(cat requirements/bench.txt requirements/constraints.txt | sha256sum | cut -c1-16)
    if [ "$(cat .venv/.cauce-bench 2>/dev/null || true)" != "$stamp" ]; then
        echo "bench: installing requirements/bench.txt into .venv"
        pip_install "$PY" -c requirements/constraints.txt -r requirements/bench.txt
        echo "$stamp" >.venv/.cauce-bench
    fi
}

peer_env() { # ENV: $ENVS/ENV from requirements/bench-ENV.txt; exports its Python's variable
    local name=$1 req=requirements/bench-$1.txt dir=$ENVS/$1 base stamp
    base=$("$PY" -c 'import sys; print(sys._base_executable)')
    stamp=$( (cat "$req" && "$base" --version) | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/.cauce-bench" 2>/dev/null || true)" != "$stamp" ]; then
        echo "bench: building $dir from $req with $("$base" --version) (minutes the first time)"
        rm -rf "$dir"
        if ! { "$base" -m venv "$dir" && pip_install "$dir/bin/python" -r "$req"; } \
            >"$OUT/logs/setup-$name.log" 2>&1; then
            grep -E "^ERROR|rror:" "$OUT/logs/setup-$name.log" | tail -n 3 \
                >"$OUT/logs/setup-$name.failed" || true
            [ -s "$OUT/logs/setup-$name.failed" ] ||
                tail -n 3 "$OUT/logs/setup-$name.log" >"$OUT/logs/setup-$name.failed"
            echo "bench: $dir could not be built (its peer is skipped):" >&2
            sed 's/^/    /' "$OUT/logs/setup-$name.failed" >&2
            return 0
        fi
        echo "$stamp" >"$dir/.cauce-bench"
    fi
    export "${VAR_OF[$name]}=$PWD/$dir/bin/python"
}

nodeps_folder() { # ENV: requirements/bench-ENV.txt with --no-deps into $ENVS/ENV (on sys.path)
    local name=$1 req=requirements/bench-$1.txt dir=$ENVS/$1 stamp
    stamp=$(cat "$req" | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/.cauce-bench" 2>/dev/null || true)" != "$stamp" ]; then
        rm -rf "$dir"
        if ! pip_install "$PY" --no-deps --target "$dir" -r "$req" >"$OUT/logs/setup-$name.log" 2>&1
        then
            echo "bench: $dir could not be built (its part is skipped)" >&2
            return 0
        fi
        echo "$stamp" >"$dir/.cauce-bench"
    fi
}

if [ -z "${CAUCE_BENCH_NO_SETUP:-}" ]; then
    bash scripts/setup.sh
    venv_peers
    if [[ " ${names[*]} " == *" tune "* ]]; then
        nodeps_folder mfpbench
    fi
    for name in "${names[@]}"; do
        for env in ${ENVS_OF[$name]:-}; do
            peer_env "$env"
        done
    done
fi
if [ "$quick" = 1 ]; then
    export CAUCE_BENCH_QUICK=1
fi

load_before=$(cut -d' ' -f1 /proc/loadavg)
for name in "${names[@]}"; do
    echo
    echo "=== benchmarks/$name.py$([ "$quick" = 1 ] && echo ' (quick)')"
    started=$(date +%s)
    set +e
    "$PY" "benchmarks/$name.py" 2> >(tee "$OUT/logs/$name.err" >&2) | tee "$OUT/logs/$name.log"
    code=${PIPESTATUS[0]}
    set -e
    echo "$code $(($(date +%s) - started))" >"$OUT/logs/$name.status"
done

echo
quick_flag=()
[ "$quick" = 1 ] && quick_flag=(--quick)
exec "$PY" benchmarks/_results.py --out "$OUT" --load-before "$load_before" "${quick_flag[@]}" \
    "${names[@]}"
