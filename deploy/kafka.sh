#!/usr/bin/env bash
# Run a local single-node Apache Kafka broker in KRaft mode (one process that
# is both broker and controller) from the Kafka jars on Maven Central.
# "deploy/kafka.sh help" lists the commands and the environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
POM_FILE=$SCRIPT_DIR/kafka/pom.xml
BROKER_LOG4J=$SCRIPT_DIR/kafka/log4j2.xml
TOOLS_LOG4J=$SCRIPT_DIR/kafka/tools-log4j2.xml
LIBS_ROOT=$REPO_ROOT/.local/kafka-libs

KAFKA_VERSION=${HBMON_KAFKA_VERSION:-4.1.1}
PORT=${HBMON_KAFKA_PORT:-9092}
CONTROLLER_PORT=${HBMON_KAFKA_CONTROLLER_PORT:-9093}
DATA_DIR=${HBMON_KAFKA_DIR:-.local/kafka}
HEAP=${HBMON_KAFKA_HEAP:-512m}
START_TIMEOUT_S=${HBMON_KAFKA_START_TIMEOUT_S:-60}
STOP_TIMEOUT_S=${HBMON_KAFKA_STOP_TIMEOUT_S:-30}

# Relative data dirs are taken from the repository root, not the current
# directory, so every caller finds the same broker.
if [[ $DATA_DIR != /* ]]; then
  DATA_DIR=$REPO_ROOT/$DATA_DIR
fi
LIBS_DIR=$LIBS_ROOT/$KAFKA_VERSION
PID_FILE=$DATA_DIR/kafka.pid
SERVER_PROPERTIES=$DATA_DIR/server.properties
ADMIN_PROPERTIES=$DATA_DIR/admin.properties
LOG_DIR=$DATA_DIR/logs
PARTITIONS_DIR=$DATA_DIR/data
BOOTSTRAP=127.0.0.1:$PORT

# File descriptors of the flock(1) locks. The broker must not inherit them.
FETCH_LOCK_FD=8
DATA_LOCK_FD=9

# Temporary download folder, removed on exit if the fetch did not finish.
FETCH_TMP_DIR=

usage() {
  cat <<EOF
Usage: deploy/kafka.sh COMMAND

Run a local single-node Apache Kafka broker (KRaft mode, combined broker and
controller) from the Kafka jars on Maven Central. Needs Java 17 or later and
Maven 3.8 or later. Listens on 127.0.0.1 only.

Commands:
  fetch              Copy the Kafka jars and their dependencies into the jar
                     cache, unless the cache for the version is complete.
  start              Fetch if needed, format the data dir on first use, start
                     the broker in the background and wait until it returns
                     its cluster id. Exits 0 if it is already running.
  stop               Send SIGTERM to the broker, then SIGKILL after the stop
                     timeout. Exits 0 if it is not running.
  status             Print whether the broker runs, its pid and bootstrap
                     address. Exits 0 when it runs, 3 when it does not.
  reset              Stop the broker and delete its data dir. The jar cache
                     stays.
  run-class CLASS [ARG...]
                     Run a Kafka class on the cached classpath, for example
                     org.apache.kafka.tools.TopicCommand --bootstrap-server
                     127.0.0.1:9092 --list
  help               Print this help (also: -h, --help).

Exit status: 0 on success, 1 on failure, 2 for a missing or unknown
command, 3 from status when the broker is not running. run-class exits
with the status of the Java class.

Environment variables:
  HBMON_KAFKA_PORT             PLAINTEXT (client) listener port on 127.0.0.1
                               (default: 9092)
  HBMON_KAFKA_CONTROLLER_PORT  KRaft controller listener port on 127.0.0.1
                               (default: 9093)
  HBMON_KAFKA_DIR              data dir with config, pid file, logs and
                               partitions; a relative path is taken from the
                               repository root (default: .local/kafka)
  HBMON_KAFKA_VERSION          Apache Kafka release, 4.0.0 or later
                               (default: 4.1.1)
  HBMON_KAFKA_HEAP             maximum Java heap of the broker, in the -Xmx
                               format: a number with an optional k, m or g
                               suffix (default: 512m)
  HBMON_KAFKA_START_TIMEOUT_S  seconds that start waits for the broker to
                               return its cluster id (default: 60)
  HBMON_KAFKA_STOP_TIMEOUT_S   seconds that stop waits after SIGTERM before
                               it sends SIGKILL (default: 30)
  JAVA_HOME                    Java installation to use (default: java on
                               PATH)

Jar cache: .local/kafka-libs/VERSION/ under the repository root, shared by
all data dirs. Broker log: DATA_DIR/logs/server.log.
EOF
}

log() {
  printf 'kafka.sh: %s\n' "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

cleanup() {
  if [[ -n $FETCH_TMP_DIR ]]; then
    rm -rf -- "$FETCH_TMP_DIR"
  fi
}
trap cleanup EXIT

now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local now_us=${EPOCHREALTIME/[.,]/}
    printf '%s\n' "$((now_us / 1000))"
  else
    printf '%s\n' "$(($(date +%s) * 1000))"
  fi
}

format_ms() {
  printf '%d.%d s' "$(($1 / 1000))" "$(($1 % 1000 / 100))"
}

validate_port() {
  local name=$1 value=$2
  if [[ ! $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
    die "$name=$value is invalid: expected a TCP port from 1 to 65535."
  fi
}

validate_settings() {
  validate_port HBMON_KAFKA_PORT "$PORT"
  validate_port HBMON_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
  if ((PORT == CONTROLLER_PORT)); then
    die "HBMON_KAFKA_PORT and HBMON_KAFKA_CONTROLLER_PORT are both $PORT:" \
      "set them to two different ports."
  fi
  if [[ ! $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.-]*$ ]]; then
    die "HBMON_KAFKA_VERSION=$KAFKA_VERSION is invalid:" \
      "expected a Kafka release such as 4.1.1."
  fi
  if [[ ! $HEAP =~ ^[0-9]+[kKmMgG]?$ ]]; then
    die "HBMON_KAFKA_HEAP=$HEAP is invalid:" \
      "expected a size such as 512m or 1g, as for java -Xmx."
  fi
  if [[ ! $START_TIMEOUT_S =~ ^[1-9][0-9]*$ ]]; then
    die "HBMON_KAFKA_START_TIMEOUT_S=$START_TIMEOUT_S is invalid:" \
      "expected a whole number of seconds, at least 1."
  fi
  if [[ ! $STOP_TIMEOUT_S =~ ^[1-9][0-9]*$ ]]; then
    die "HBMON_KAFKA_STOP_TIMEOUT_S=$STOP_TIMEOUT_S is invalid:" \
      "expected a whole number of seconds, at least 1."
  fi
}

java_command() {
  if [[ -n ${JAVA_HOME:-} ]]; then
    printf '%s\n' "$JAVA_HOME/bin/java"
  else
    printf '%s\n' java
  fi
}

# Fail unless java runs and is version 17 or later, the minimum of Kafka 4
# brokers. "java -version" prints e.g. 'openjdk version "17.0.15" 2025-04-15'.
check_java() {
  local java version major
  java=$(java_command)
  if ! version=$("$java" -version 2>&1); then
    die "cannot run '$java -version': install Java 17 or later," \
      "or set JAVA_HOME to one."
  fi
  version=$(sed -n 's/^[^"]*"\([^"]*\)".*/\1/p' <<<"$version" | head -n 1)
  major=${version%%[.+-]*}
  if [[ $major == 1 ]]; then
    major=$(cut -d . -f 2 <<<"$version")
  fi
  if [[ ! $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "$java is version '$version', but Kafka $KAFKA_VERSION needs" \
      "Java 17 or later: install it or set JAVA_HOME."
  fi
}

# Take an exclusive flock(1) lock on FILE through file descriptor FD. Where
# flock is missing (macOS), run without the lock.
take_lock() {
  local fd=$1 file=$2 what=$3
  if ! command -v flock >/dev/null; then
    return 0
  fi
  eval "exec $fd>\"\$file\""
  if ! flock -w 600 "$fd"; then
    die "timed out after 600 s waiting for the lock on $what ($file):" \
      "another deploy/kafka.sh is still running."
  fi
}

libs_complete() {
  [[ -f $LIBS_DIR/.complete && -f $LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar ]]
}

# Copy the jars into a temporary folder, then rename it to LIBS_DIR, so that
# LIBS_DIR either does not exist or contains a complete classpath. The lock
# keeps concurrent fetches from downloading the same files into ~/.m2.
fetch_libs() {
  local output
  if libs_complete; then
    return 0
  fi
  if ! command -v mvn >/dev/null; then
    die "mvn not found on PATH: install Maven 3.8 or later to fetch Kafka."
  fi
  mkdir -p -- "$LIBS_ROOT"
  take_lock "$FETCH_LOCK_FD" "$LIBS_ROOT/.fetch.lock" "the jar cache"
  if libs_complete; then
    eval "exec $FETCH_LOCK_FD>&-"
    return 0
  fi

  # Download into a new temporary folder.
  log "fetching Apache Kafka $KAFKA_VERSION jars into $LIBS_DIR"
  FETCH_TMP_DIR=$(mktemp -d "$LIBS_ROOT/.tmp-$KAFKA_VERSION-XXXXXX")
  if ! output=$(mvn -q -B -f "$POM_FILE" "-Dkafka.version=$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime \
    "-DoutputDirectory=$FETCH_TMP_DIR" 2>&1); then
    printf '%s\n' "$output" >&2
    die "mvn failed to fetch Kafka $KAFKA_VERSION (output above):" \
      "check HBMON_KAFKA_VERSION and access to Maven Central."
  fi
  if [[ ! -f $FETCH_TMP_DIR/kafka_2.13-$KAFKA_VERSION.jar ]]; then
    die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing" \
      "from $FETCH_TMP_DIR; check $POM_FILE."
  fi
  touch -- "$FETCH_TMP_DIR/.complete"

  # Replace a leftover incomplete folder, then rename.
  rm -rf -- "$LIBS_DIR"
  mv -- "$FETCH_TMP_DIR" "$LIBS_DIR"
  FETCH_TMP_DIR=
  eval "exec $FETCH_LOCK_FD>&-"
  log "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l | tr -d ' ') jars"
}

# Run a Kafka class with the tools' logging configuration.
run_class() {
  local java
  java=$(java_command)
  "$java" -Xmx256m -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$TOOLS_LOG4J" \
    -cp "$LIBS_DIR/*" "$@"
}

# Run a short-lived internal tool. C1-only compilation and the serial
# collector make the JVM start faster. run_class keeps the JVM defaults.
run_quick_tool() {
  run_class -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "$@"
}

# Succeed if PID is a broker started by this script for this data dir. The
# command-line check guards against a pid reused by an unrelated process,
# and it fails for a zombie, which ps lists as "[java] <defunct>".
is_broker_process() {
  local pid=$1 args
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  args=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $args == *" kafka.Kafka $SERVER_PROPERTIES" ]]
}

# Succeed if PID exists and is not a zombie.
process_alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $state && $state != Z* ]]
}

# Print the pid of the running broker, or nothing.
running_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 0
  pid=$(<"$PID_FILE")
  if is_broker_process "$pid"; then
    printf '%s\n' "$pid"
  fi
}

# Print the bootstrap address in the data dir's server.properties. It is the
# address of the running broker, even when HBMON_KAFKA_PORT names another.
configured_bootstrap() {
  sed -n 's|^advertised.listeners=PLAINTEXT://||p' "$SERVER_PROPERTIES" \
    2>/dev/null || true
}

# Remove a pid file whose process is not a running broker.
remove_stale_pid_file() {
  local pid
  [[ -f $PID_FILE ]] || return 0
  pid=$(<"$PID_FILE")
  if ! is_broker_process "$pid"; then
    log "removing stale pid file $PID_FILE (pid '$pid' is not a running broker)"
    rm -f -- "$PID_FILE"
  fi
}

# Succeed if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_server_properties() {
  mkdir -p -- "$LOG_DIR" "$PARTITIONS_DIR"
  cat >"$SERVER_PROPERTIES" <<EOF
# Written by deploy/kafka.sh on every start, which overwrites any edits.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$PARTITIONS_DIR

# One broker, so every internal topic has one replica.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# The services create their topics themselves, each with its own timestamp
# type, so log.message.timestamp.type keeps its default (CreateTime).
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
EOF
}

# Write the admin client settings of one readiness check that may take up
# to TIMEOUT_MS. The check starts with the broker and retries the
# connection every 100 ms.
write_admin_properties() {
  local timeout_ms=$1
  cat >"$ADMIN_PROPERTIES" <<EOF
# Written by deploy/kafka.sh for its readiness check.
request.timeout.ms=$((timeout_ms < 5000 ? timeout_ms : 5000))
default.api.timeout.ms=$timeout_ms
reconnect.backoff.ms=50
reconnect.backoff.max.ms=100
EOF
}

# Print a new cluster id: 16 random bytes in URL-safe base64 without
# padding, the format of Kafka's Uuid. Like Uuid.randomUuid() in
# kafka-clients 4.1.1, it avoids a leading "-", which reads as an option.
new_cluster_id() {
  local id=-
  while [[ $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  printf '%s\n' "$id"
}

# Format the log dir with a new cluster id, unless it is formatted already.
format_storage_once() {
  local cluster_id
  if [[ -f $PARTITIONS_DIR/meta.properties ]]; then
    return 0
  fi
  cluster_id=$(new_cluster_id)
  log "formatting $PARTITIONS_DIR with cluster id $cluster_id"
  if ! run_quick_tool kafka.tools.StorageTool format \
    --cluster-id "$cluster_id" --config "$SERVER_PROPERTIES" >/dev/null; then
    die "formatting $PARTITIONS_DIR failed (output above)."
  fi
}

file_size() {
  if [[ -f $1 ]]; then
    wc -c <"$1" | tr -d ' '
  else
    printf '0\n'
  fi
}

# Print the last lines that FILE got after it had OFFSET bytes. If the file
# is shorter, log4j rolled it over, so print its last lines.
print_log_tail() {
  local file=$1 offset=$2 size
  size=$(file_size "$file")
  if ((size < offset)); then
    offset=0
  fi
  if ((size > offset)); then
    log "last lines of $file:"
    tail -c +$((offset + 1)) -- "$file" | tail -n 30 >&2
  fi
}

# Send SIGTERM to PID, wait up to STOP_TIMEOUT_S for it to exit, then send
# SIGKILL.
terminate_broker() {
  local pid=$1 deadline_ms
  kill -TERM "$pid" 2>/dev/null || true
  deadline_ms=$(($(now_ms) + STOP_TIMEOUT_S * 1000))
  while process_alive "$pid" && (($(now_ms) < deadline_ms)); do
    sleep 0.2
  done
  if process_alive "$pid"; then
    log "broker pid $pid did not exit within $STOP_TIMEOUT_S s;" \
      "sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while process_alive "$pid"; do
      sleep 0.1
    done
  fi
}

# Print the cluster id that the data dir was formatted with.
formatted_cluster_id() {
  sed -n 's/^cluster\.id=//p' "$PARTITIONS_DIR/meta.properties"
}

# Wait until the broker returns its cluster id, and check the id, so that a
# broker of another data dir on the same port is not taken for this one.
# The tool starts its JVM while the broker starts, so one check runs up to
# 10 s and the last one ends at START_TIMEOUT_S. Return 1 if the broker
# exits, 2 if START_TIMEOUT_S passes first and 3 if another cluster id
# comes back.
wait_until_ready() {
  local pid=$1 cluster_id deadline_ms remaining_ms output
  cluster_id=$(formatted_cluster_id)
  deadline_ms=$(($(now_ms) + START_TIMEOUT_S * 1000))
  while :; do
    if ! is_broker_process "$pid"; then
      return 1
    fi
    remaining_ms=$((deadline_ms - $(now_ms)))
    if ((remaining_ms < 100)); then
      return 2
    fi
    write_admin_properties $((remaining_ms < 10000 ? remaining_ms : 10000))
    if output=$(run_quick_tool org.apache.kafka.tools.ClusterTool cluster-id \
      --bootstrap-server "$BOOTSTRAP" --config "$ADMIN_PROPERTIES" 2>/dev/null); then
      if [[ $output == "Cluster ID: $cluster_id" ]]; then
        return 0
      fi
      log "127.0.0.1:$PORT returned '$output', but the cluster id of" \
        "$DATA_DIR is $cluster_id"
      return 3
    fi
    sleep 0.2
  done
}

launch_broker() {
  local java
  java=$(java_command)
  # Closing the lock descriptors keeps the broker from holding the locks.
  # setsid gives the broker a session of its own, so a Ctrl-C in the
  # terminal that started it reaches the services but not the broker, and
  # they can flush before "stop" ends it.
  local detach=()
  if command -v setsid >/dev/null 2>&1; then
    detach=(setsid)
  fi
  "${detach[@]}" nohup "$java" "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" \
    "-Dlog4j2.configurationFile=$BROKER_LOG4J" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$SERVER_PROPERTIES" \
    </dev/null >>"$LOG_DIR/kafka.out" 2>&1 8>&- 9>&- &
  printf '%s\n' "$!" >"$PID_FILE.tmp"
  mv -- "$PID_FILE.tmp" "$PID_FILE"
}

cmd_fetch() {
  fetch_libs
  log "jar cache for Kafka $KAFKA_VERSION is complete: $LIBS_DIR"
}

cmd_start() {
  local pid running_bootstrap started_ms out_offset log_offset status=0
  check_java

  # Serialize start, stop and reset on this data dir.
  mkdir -p -- "$DATA_DIR"
  take_lock "$DATA_LOCK_FD" "$DATA_DIR/.lock" "$DATA_DIR"
  remove_stale_pid_file
  pid=$(running_pid)
  running_bootstrap=$(configured_bootstrap)
  if [[ -n $pid && $running_bootstrap != "$BOOTSTRAP" ]]; then
    die "the broker of $DATA_DIR is already running (pid $pid) with" \
      "bootstrap $running_bootstrap, not $BOOTSTRAP: stop it first or set" \
      "HBMON_KAFKA_PORT to its port."
  fi
  if [[ -n $pid ]]; then
    log "broker is already running (pid $pid), bootstrap $BOOTSTRAP"
    return 0
  fi

  # Reject ports that another process listens on, such as a second broker.
  if port_open "$PORT"; then
    die "127.0.0.1:$PORT is already in use: stop the process that listens" \
      "on it or set HBMON_KAFKA_PORT to a free port."
  fi
  if port_open "$CONTROLLER_PORT"; then
    die "127.0.0.1:$CONTROLLER_PORT is already in use: stop the process" \
      "that listens on it or set HBMON_KAFKA_CONTROLLER_PORT to a free port."
  fi

  # Prepare jars, configuration and storage.
  started_ms=$(now_ms)
  fetch_libs
  write_server_properties
  format_storage_once

  # Launch and wait.
  out_offset=$(file_size "$LOG_DIR/kafka.out")
  log_offset=$(file_size "$LOG_DIR/server.log")
  launch_broker
  pid=$(<"$PID_FILE")
  wait_until_ready "$pid" || status=$?
  if ((status == 0)); then
    log "Kafka $KAFKA_VERSION broker started in" \
      "$(format_ms $(($(now_ms) - started_ms))) (pid $pid)," \
      "bootstrap $BOOTSTRAP, log $LOG_DIR/server.log"
    return 0
  fi

  # Report the failure and leave no half-started broker behind.
  print_log_tail "$LOG_DIR/kafka.out" "$out_offset"
  print_log_tail "$LOG_DIR/server.log" "$log_offset"
  if ((status == 1)); then
    rm -f -- "$PID_FILE"
    die "broker pid $pid exited during startup; see the log above."
  fi
  terminate_broker "$pid"
  rm -f -- "$PID_FILE"
  if ((status == 3)); then
    die "another Kafka broker listens on $BOOTSTRAP, so this one was" \
      "stopped: stop the other one or set HBMON_KAFKA_PORT to a free port."
  fi
  die "timed out after $START_TIMEOUT_S s waiting for the broker on" \
    "$BOOTSTRAP, so it was stopped; see the log above."
}

cmd_stop() {
  local pid
  if [[ ! -d $DATA_DIR ]]; then
    log "broker is not running ($DATA_DIR does not exist)"
    return 0
  fi
  take_lock "$DATA_LOCK_FD" "$DATA_DIR/.lock" "$DATA_DIR"
  remove_stale_pid_file
  pid=$(running_pid)
  if [[ -z $pid ]]; then
    log "broker is not running ($DATA_DIR)"
    return 0
  fi
  log "stopping broker pid $pid"
  terminate_broker "$pid"
  rm -f -- "$PID_FILE"
  log "broker stopped"
}

cmd_status() {
  local pid
  pid=$(running_pid)
  if [[ -n $pid ]]; then
    printf 'running: pid %s, bootstrap %s, data dir %s\n' \
      "$pid" "$(configured_bootstrap)" "$DATA_DIR"
    return 0
  fi
  printf 'not running: bootstrap %s, data dir %s\n' "$BOOTSTRAP" "$DATA_DIR"
  return 3
}

# Delete only folders that this script made, so that a mistyped
# HBMON_KAFKA_DIR such as /tmp or $HOME is never deleted.
cmd_reset() {
  local entry
  local -a entries
  if [[ ! -d $DATA_DIR ]]; then
    log "nothing to delete: $DATA_DIR does not exist"
    return 0
  fi
  shopt -s nullglob dotglob
  entries=("$DATA_DIR"/*)
  shopt -u nullglob dotglob
  for entry in "${entries[@]}"; do
    case ${entry##*/} in
      .lock | server.properties | admin.properties | kafka.pid | \
        kafka.pid.tmp | logs | data) ;;
      *)
        die "not deleting $DATA_DIR: it contains ${entry##*/}, which" \
          "deploy/kafka.sh does not write. Check HBMON_KAFKA_DIR."
        ;;
    esac
  done
  cmd_stop
  rm -rf -- "$DATA_DIR"
  log "deleted $DATA_DIR"
}

cmd_run_class() {
  if (($# == 0)); then
    die "run-class needs a class name, for example" \
      "org.apache.kafka.tools.TopicCommand."
  fi
  check_java
  fetch_libs
  run_class "$@"
}

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  local command=$1
  shift
  case $command in
    help | -h | --help)
      usage
      return 0
      ;;
  esac
  validate_settings
  case $command in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    run-class) cmd_run_class "$@" ;;
    *)
      log "error: unknown command '$command'; run deploy/kafka.sh --help."
      exit 2
      ;;
  esac
}

main "$@"
