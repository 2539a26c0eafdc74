"""The supervisor: one process that owns a launched job for its whole life (docs/supervisor.md).

- `state`: the job's directory on this machine (state.json, events.jsonl, output.jsonl, the lock);
- `decide`: the pure decisions (a hang, a node unreachable too long, what to do after a failure);
- `checkpoints`: the newest checkpoint every rank has, from the servers' listings;
- `resume`: where the checkpoints are, the resume copy of the config, the relaunch's environment;
- `supervisor`: the process's main loop (start or adopt, watch, stop, preflight, spares, relaunch);
- `client`: what the CLI does with it (spawn it detached, follow its events and the job's output, stop it).
"""
