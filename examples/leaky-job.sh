#!/bin/sh
# A job that misbehaves the way real ones do, for `tend run` to tame.
#
# Run it plainly through a pipe and the pipe never closes: `sh examples/leaky-job.sh | cat`
# hangs for ten minutes, because the background "log shipper" below keeps the job's stdout
# open after the job itself has exited, and the "daemon" has escaped into its own session.
#
# Under tend:  tend run --timeout 20s --record job.record.gz --json - -- sh examples/leaky-job.sh
# the run ends as soon as the job exits, with all its output, and both stragglers are found
# and stopped.

echo "job: starting"

# A forgotten helper that inherits our stdout and never lets go of it.
( trap '' HUP; while :; do sleep 1; done ) &

# A daemon that double-forks and calls setsid(): it is no longer in our process group or
# session, and a plain `kill -- -PGID` would miss it.
sh -c 'setsid sh -c "exec sleep 600" </dev/null >/dev/null 2>&1 &'

for step in 1 2 3; do
        echo "job: step $step of 3"
        sleep 0.2
done
echo "job: a warning on stderr" >&2
echo "job: done, exiting with 3"
exit 3
