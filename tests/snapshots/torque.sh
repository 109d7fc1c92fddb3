#!/bin/bash
#PBS -N render-test-PREFIX-gpu2-1
#PBS -t 0-2
#PBS -j oe
#PBS -o /SWEEP/logs/
#PBS -l walltime=02:30:00
#PBS -l nodes=1:ppn=8:gpus=2,mem=32768mb
# Written by hpc-sweep 0.1.0 for sweep render-test, submission render-test-PREFIX-gpu2-1 (3 task(s)).
# Each task finds its config from its array index through the map below, records start and exit markers,
# runs the site's setup lines and the command. Re-render with `hpc-sweep render`; do not edit by hand.
set -u
HPCS_SWEEP_DIR=/SWEEP
HPCS_JOB_NAME=render-test-PREFIX-gpu2-1
HPCS_MAP=/SWEEP/script/render-test-PREFIX-gpu2-1.map
HPCS_MARKERS=/SWEEP/.hpc_sweep/markers
HPCS_LOGS=/SWEEP/logs
HPCS_INDEX="${PBS_ARRAYID:-0}"
HPCS_TASK_ID="${PBS_JOBID:-unknown}"
HPCS_SUBMISSION_ID=""
# The map is tab-separated: index, config, attempt, config file, outputs folder, device, GPUs and, where the task
# needs its own environment, NAME=VALUE words.
HPCS_LINE=$(awk -F '\t' -v i="$HPCS_INDEX" '$1 == i { print; exit }' "$HPCS_MAP")
if [ -z "$HPCS_LINE" ]; then
    echo "hpc-sweep: no config for array index $HPCS_INDEX in $HPCS_MAP" >&2
    exit 3
fi
IFS=$'\t' read -r _ HPCS_NAME HPCS_ATTEMPT HPCS_CONFIG HPCS_OUTPUTS HPCS_DEVICE HPCS_GPUS HPCS_ENV <<< "$HPCS_LINE"
HPCS_PORT=$(( 29500 + HPCS_INDEX % 2000 ))
# Processes to start ({nprocs}): one per GPU, and one for a CPU config (torchrun refuses 0).
HPCS_NPROCS=$(( HPCS_GPUS > 0 ? HPCS_GPUS : 1 ))
export HPCS_NAME HPCS_ATTEMPT HPCS_CONFIG HPCS_OUTPUTS HPCS_DEVICE HPCS_GPUS HPCS_NPROCS HPCS_PORT HPCS_INDEX
if [ -n "$HPCS_ENV" ]; then
    read -r -a HPCS_ENV_WORDS <<< "$HPCS_ENV"
    for HPCS_WORD in "${HPCS_ENV_WORDS[@]}"; do
        export "$HPCS_WORD"
    done
fi
# Markers make status right even where accounting (sacct, job history) is off.
HPCS_MARKER="$HPCS_MARKERS/$HPCS_NAME.$HPCS_ATTEMPT"
HPCS_RUN_LOG="$HPCS_LOGS/$HPCS_NAME.$HPCS_ATTEMPT.log"
# Exactly once: only the first task to claim this (config, attempt) runs it (mkdir is atomic, on NFS too). Another
# task queued for it by mistake leaves its log, outputs and markers alone; the same task requeued finds its own claim.
if mkdir "$HPCS_MARKER.claim" 2>/dev/null; then
    printf '%s\n' "$HPCS_TASK_ID" > "$HPCS_MARKER.claim/task"
elif [ -d "$HPCS_MARKER.claim" ]; then
    HPCS_OWNER=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do  # the claimer writes its id right after its mkdir
        HPCS_OWNER=$(cat "$HPCS_MARKER.claim/task" 2>/dev/null)
        [ -z "$HPCS_OWNER" ] || break
        sleep 1
    done
    if [ "$HPCS_OWNER" != "$HPCS_TASK_ID" ]; then
        echo "hpc-sweep: $HPCS_NAME attempt $HPCS_ATTEMPT already claimed by task ${HPCS_OWNER:-unknown};" \
            "this duplicate task exits without running"
        printf '{"claimed_by": "%s", "time": %s}\n' "$HPCS_OWNER" "$(date +%s)" \
            > "$HPCS_MARKER.duplicate.$HPCS_TASK_ID"
        exit 0
    fi
else
    echo "hpc-sweep: cannot claim $HPCS_NAME attempt $HPCS_ATTEMPT in $HPCS_MARKERS; not running it" >&2
    exit 3
fi
printf '{"job_id": "%s", "submission_id": "%s", "job_name": "%s", "host": "%s", "time": %s, "index": %s, "pid": %s}\n' \
    "$HPCS_TASK_ID" "$HPCS_SUBMISSION_ID" "$HPCS_JOB_NAME" "$(hostname)" "$(date +%s)" "$HPCS_INDEX" "$$" \
    > "$HPCS_MARKER.start.tmp" \
    && mv -f "$HPCS_MARKER.start.tmp" "$HPCS_MARKER.start"
hpcs_record_exit() {
    printf '{"exit_code": %s, "time": %s}\n' "$1" "$(date +%s)" > "$HPCS_MARKER.exit.tmp" \
        && mv -f "$HPCS_MARKER.exit.tmp" "$HPCS_MARKER.exit"
}
cd "$HPCS_SWEEP_DIR" || { hpcs_record_exit 2; exit 2; }
# The command line runs as written (chains, pipes, environment assignments, `source`), without this script's
# `set -u`, in a subshell of its own process group (set -m) in the background: a TERM or INT from the scheduler
# (time limit, cancel) or the local runner is forwarded to that whole group, the subshell ends with 128+signal
# once its current step has ended (a trainer may save a checkpoint), and the exit marker is still written.
# Its output goes to logs/<config>.<attempt>.log.
HPCS_COMMAND='cat "$HPCS_CONFIG"'
HPCS_CHILD=""
HPCS_SIGNAL=""
hpcs_forward() {
    HPCS_SIGNAL=$1
    [ -z "$HPCS_CHILD" ] || kill -s "$1" -- "-$HPCS_CHILD" 2>/dev/null
}
trap 'hpcs_forward TERM' TERM
trap 'hpcs_forward INT' INT
set -m
( set +m +u; trap 'exit 143' TERM; trap 'exit 130' INT; eval "$HPCS_COMMAND" ) < /dev/null >> "$HPCS_RUN_LOG" 2>&1 &
HPCS_CHILD=$!
set +m
[ -z "$HPCS_SIGNAL" ] || kill -s "$HPCS_SIGNAL" -- "-$HPCS_CHILD" 2>/dev/null  # a signal before $! was known
wait "$HPCS_CHILD"
HPCS_CODE=$?
while kill -0 "$HPCS_CHILD" 2>/dev/null; do
    wait "$HPCS_CHILD"
    HPCS_CODE=$?
done
hpcs_record_exit "$HPCS_CODE"
exit "$HPCS_CODE"
