"""Orchestration of the job over the nodes: what runs where (`plan`), preflight checks, the launch
sequence (`job`), start/watch/stop (`launcher`), docker operations on one node (`nodeops`), status, log
collection and the loss parser (`losslog`)."""
