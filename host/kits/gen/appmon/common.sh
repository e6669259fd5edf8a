# Shared by the Guest Application actions: where this resource's files are,
# and how its appmgr is found, started and stopped. The appmgr runs in a
# session of its own (it outlives the action that starts it) and records
# where monitoring stands in its state file: `running PID PROCESS`, then
# `ended CODE: WHY` when the application ends or the guest is lost.

run_dir="${HEARTLINE_STATE_DIR:-/var/lib/heartline}/appmon"
pid_file="$run_dir/$HEARTLINE_TAG.pid"
state_file="$run_dir/$HEARTLINE_TAG.state"
log_file="$run_dir/$HEARTLINE_TAG.log"
heartline="${HEARTLINE_BIN:-heartline}"

say() {
    echo "gen/appmon $HEARTLINE_ACTION of $HEARTLINE_TAG: $*" >&2
}

# Fails with exit 2 when property $1 is empty: a configuration mistake, not
# a resource failure.
need() {
    if [ -z "$2" ]; then
        say "the $1 property is not set (ins create ... --prop $1=...)"
        exit 2
    fi
}

state() {
    cat "$state_file" 2>/dev/null
}

# Prints the pid of this resource's appmgr while it runs. The command line
# is checked too, so a recycled pid is never taken for it.
appmgr_pid() {
    [ -f "$pid_file" ] || return 1
    pid=$(cat "$pid_file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q " appmgr "; then
        return 1
    fi
    echo "$pid"
}

# Stops the appmgr, which stops the application on the guest (SIGTERM, then
# SIGKILL after stop_grace) and exits. If it hangs it is killed; the guest
# then stops the application itself once its orphan timeout passes.
stop_appmgr() {
    if pid=$(appmgr_pid); then
        kill -TERM "$pid" 2>/dev/null
        tenths=0
        while kill -0 "$pid" 2>/dev/null && [ "$tenths" -lt 350 ]; do
            sleep 0.1
            tenths=$((tenths + 1))
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            say "appmgr $pid did not stop in 35 s: killed; the guest stops the application after its orphan timeout"
        fi
        say "$(state)"
    fi
    rm -f "$pid_file"
}

# Starts an appmgr for this resource and waits until the application runs
# on the guest and still runs after the settle time (return 0), or cannot
# (return 1). Its output and the appmgr's log go to the resource's log.
start_appmgr() {
    need guest "${HEARTLINE_PROP_GUEST:-}"
    need command "${HEARTLINE_PROP_COMMAND:-}"
    mkdir -p "$run_dir" || exit 1
    stop_appmgr
    rm -f "$state_file"
    setsid "$heartline" appmgr \
        --node "$HEARTLINE_PROP_GUEST" \
        --dir "${HEARTLINE_PROP_DIR:-/etc/heartline/appmon}" \
        --poll-interval "${HEARTLINE_PROP_POLL_INTERVAL:-1s}" \
        --appserver-timeout "${HEARTLINE_PROP_TIMEOUT:-10s}" \
        --stop-grace "${HEARTLINE_PROP_STOP_GRACE:-10s}" \
        ${HEARTLINE_PROP_SERVER_NAME:+--server-name "$HEARTLINE_PROP_SERVER_NAME"} \
        --state-file "$state_file" \
        -- /bin/sh -c "$HEARTLINE_PROP_COMMAND" \
        </dev/null >>"$log_file" 2>&1 &
    pid=$!
    echo "$pid" >"$pid_file"
    tenths=0
    while [ "$tenths" -lt 250 ]; do
        case "$(state)" in
        running*)
            # An application that dies at once is not in service: it must
            # still run after the settle time.
            sleep "${HEARTLINE_PROP_SETTLE:-1}"
            case "$(state)" in
            running*)
                say "$(state) on $HEARTLINE_PROP_GUEST (appmgr $pid)"
                return 0
                ;;
            esac
            say "the application did not stay up: $(state)"
            stop_appmgr
            return 1
            ;;
        ended*)
            say "$(state)"
            return 1
            ;;
        esac
        if ! kill -0 "$pid" 2>/dev/null; then
            say "appmgr ended before the application ran; see $log_file"
            return 1
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
    say "the application was not running on $HEARTLINE_PROP_GUEST after 25 s"
    stop_appmgr
    return 1
}
