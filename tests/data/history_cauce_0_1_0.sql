BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('v3.2.0.a');
CREATE TABLE events (
	id INTEGER NOT NULL, 
	job_id VARCHAR(200) NOT NULL, 
	ts FLOAT NOT NULL, 
	kind VARCHAR(40) NOT NULL, 
	task_id VARCHAR(200), 
	attempt INTEGER, 
	data TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);
INSERT INTO "events" VALUES(1,'hello-20260101-120000-ab12',1767268805.5,'restart',NULL,NULL,'{"restart": 1, "cause": "worker-0 failed first"}');
CREATE TABLE jobs (
	id VARCHAR(200) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	framework VARCHAR(20) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	cluster VARCHAR(200) NOT NULL, 
	source TEXT NOT NULL, 
	spec TEXT NOT NULL, 
	run_dir TEXT NOT NULL, 
	host VARCHAR(200) NOT NULL, 
	driver_pid INTEGER, 
	driver_start VARCHAR(40), 
	created_at FLOAT NOT NULL, 
	started_at FLOAT, 
	ended_at FLOAT, 
	attempts INTEGER NOT NULL, 
	restarts INTEGER NOT NULL, 
	root_cause TEXT, 
	PRIMARY KEY (id)
);
INSERT INTO "jobs" VALUES('hello-20260101-120000-ab12','hello','job','pytorch','succeeded','local','/jobs/hello.yaml','{}','/runs/hello','box',123,'456',1767268800.0,1767268801.0,1767268810.0,2,1,NULL);
INSERT INTO "jobs" VALUES('hello-20260101-130000-cd34','hello','job','none','failed','local','','','','',NULL,NULL,1767272400.0,NULL,NULL,0,0,'worker-1 failed first (exit 3 after 1.0 s, attempt 1)');
CREATE TABLE metrics (
	id INTEGER NOT NULL, 
	job_id VARCHAR(200) NOT NULL, 
	task_id VARCHAR(200) NOT NULL, 
	attempt INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	ts FLOAT NOT NULL, 
	name VARCHAR(120) NOT NULL, 
	value FLOAT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);
INSERT INTO "metrics" VALUES(1,'hello-20260101-120000-ab12','worker-0',1,10,1767268809.0,'loss',0.25);
CREATE TABLE studies (
	study_id INTEGER NOT NULL, 
	study_name VARCHAR(512) NOT NULL, 
	PRIMARY KEY (study_id)
);
INSERT INTO "studies" VALUES(1,'hello');
CREATE TABLE study_directions (
	study_direction_id INTEGER NOT NULL, 
	direction VARCHAR(8) NOT NULL, 
	study_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	PRIMARY KEY (study_direction_id), 
	UNIQUE (study_id, objective), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "study_directions" VALUES(1,'MINIMIZE',1,0);
CREATE TABLE study_system_attributes (
	study_system_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_system_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE study_user_attributes (
	study_user_attribute_id INTEGER NOT NULL, 
	study_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (study_user_attribute_id), 
	UNIQUE (study_id, "key"), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
CREATE TABLE tasks (
	job_id VARCHAR(200) NOT NULL, 
	task_id VARCHAR(200) NOT NULL, 
	attempt INTEGER NOT NULL, 
	role VARCHAR(40) NOT NULL, 
	role_index INTEGER NOT NULL, 
	host VARCHAR(200) NOT NULL, 
	port INTEGER, 
	gpus VARCHAR(200) NOT NULL, 
	pid INTEGER, 
	status VARCHAR(20) NOT NULL, 
	exit_code INTEGER, 
	started_at FLOAT, 
	ended_at FLOAT, 
	log_path TEXT NOT NULL, 
	PRIMARY KEY (job_id, task_id, attempt), 
	FOREIGN KEY(job_id) REFERENCES jobs (id)
);
INSERT INTO "tasks" VALUES('hello-20260101-120000-ab12','worker-0',0,'worker',0,'box',29500,'',200,'stopped',-15,1767268801.0,1767268805.0,'/runs/hello/logs/worker-0.log');
INSERT INTO "tasks" VALUES('hello-20260101-120000-ab12','worker-0',1,'worker',0,'box',29501,'0',201,'succeeded',0,1767268806.0,1767268810.0,'/runs/hello/logs/worker-0.log');
CREATE TABLE trial_heartbeats (
	trial_heartbeat_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	heartbeat DATETIME NOT NULL, 
	PRIMARY KEY (trial_heartbeat_id), 
	UNIQUE (trial_id), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_intermediate_values (
	trial_intermediate_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	step INTEGER NOT NULL, 
	intermediate_value FLOAT, 
	intermediate_value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_intermediate_value_id), 
	UNIQUE (trial_id, step), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_params (
	param_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	param_name VARCHAR(512), 
	param_value FLOAT, 
	distribution_json TEXT, 
	PRIMARY KEY (param_id), 
	UNIQUE (trial_id, param_name), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_params" VALUES(1,1,'lr',0.036885946818774,'{"name": "FloatDistribution", "attributes": {"step": null, "low": 0.01, "high": 1.0, "log": false}}');
CREATE TABLE trial_system_attributes (
	trial_system_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_system_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_user_attributes (
	trial_user_attribute_id INTEGER NOT NULL, 
	trial_id INTEGER, 
	"key" VARCHAR(512), 
	value_json TEXT, 
	PRIMARY KEY (trial_user_attribute_id), 
	UNIQUE (trial_id, "key"), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
CREATE TABLE trial_values (
	trial_value_id INTEGER NOT NULL, 
	trial_id INTEGER NOT NULL, 
	objective INTEGER NOT NULL, 
	value FLOAT, 
	value_type VARCHAR(7) NOT NULL, 
	PRIMARY KEY (trial_value_id), 
	UNIQUE (trial_id, objective), 
	FOREIGN KEY(trial_id) REFERENCES trials (trial_id)
);
INSERT INTO "trial_values" VALUES(1,1,0,0.5,'FINITE');
CREATE TABLE trials (
	trial_id INTEGER NOT NULL, 
	number INTEGER, 
	study_id INTEGER, 
	state VARCHAR(8) NOT NULL, 
	datetime_start DATETIME, 
	datetime_complete DATETIME, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_id) REFERENCES studies (study_id)
);
INSERT INTO "trials" VALUES(1,0,1,'COMPLETE','2026-11-30 01:04:21.561412','2026-11-30 01:04:21.753639');
CREATE TABLE version_info (
	version_info_id INTEGER NOT NULL, 
	schema_version INTEGER, 
	library_version VARCHAR(256), 
	PRIMARY KEY (version_info_id), 
	CHECK (version_info_id=1)
);
INSERT INTO "version_info" VALUES(1,12,'5.0.0');
CREATE INDEX ix_events_job_id ON events (job_id);
CREATE INDEX ix_metrics_job_id ON metrics (job_id);
CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name);
CREATE INDEX ix_trials_study_id ON trials (study_id);
COMMIT;
