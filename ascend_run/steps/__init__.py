"""The steps around the job that users otherwise do by hand, each over the transports:

- `task`: run a one-off container on one node, detached and followed (the others build on it);
- `weights_download`: the model weights from the openMind hub onto one node (`hub_fetch.py` runs in the image);
- `spread`: a directory from node 0 to the other nodes, sha256-checked (weights, datasets);
- `dataprep`: Wikitext-2 -> Megatron BIN on one node;
- `ship_image`: an image from the local engine to every node, without a registry;
- `ranktable`: `hccl.json` from every NPU's address on the live cluster.
"""
