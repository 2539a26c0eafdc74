"""Two or three real examples at the end of every command's --help (and in the man page), by command.

tests/test_help.py parses each with the command line itself, so an example never shows an option that is
not there (or a removed spelling)."""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "": ["ascend-run init train --out job.yaml && ascend-run validate -f job.yaml",
         "ascend-run -f job.yaml launch --detach && ascend-run jobs",
         "ascend-run exec -f cluster.yaml -w node[01-04] -- npu-smi info"],
    "init": ["ascend-run init train --out job.yaml && ascend-run validate -f job.yaml",
             "ascend-run init infer --out infer.yaml",
             "ascend-run init sim --out sim-job.yaml"],
    "validate": ["ascend-run validate -f job.yaml",
                 "ascend-run validate -f job.yaml -o json",
                 "ASCEND_RUN_FILE=job.yaml ascend-run validate"],
    "config": ["ascend-run config presets",
               "ascend-run config check pretrain_deepseek3_1b.yaml --npus 8"],
    "config check": ["ascend-run config check pretrain_deepseek3_1b.yaml --npus 8",
                     "ascend-run config check pretrain_deepseek3_1b.yaml --npus 8 -o json"],
    "config derive": ["ascend-run config derive pretrain_deepseek3_671b.yaml --preset article-1b --npus 8 "
                      "--out pretrain_deepseek3_1b.yaml",
                      "ascend-run config derive base.yaml --npus 16 --set parallel_config.data_parallel=2 "
                      "--out derived.yaml"],
    "config presets": ["ascend-run config presets", "ascend-run config presets -o yaml"],
    "image": ["ascend-run image render train", "ascend-run image build train --dry-run",
              "ascend-run image ship train -f cluster.yaml"],
    "image build": ["ascend-run image build train --dry-run",
                    "ascend-run image build infer --base my/cann:8.0 --quiet"],
    "image render": ["ascend-run image render train", "ascend-run image render infer --out context/"],
    "image ship": ["ascend-run image ship train -f cluster.yaml --dry-run",
                   "ascend-run image ship train -f cluster.yaml -x node[05-08]"],
    "docker-run": ["ascend-run docker-run -f infer.yaml --out scripts/",
                   "ascend-run docker-run -f infer.yaml --dry-run -w infer0"],
    "preflight": ["ascend-run preflight -f job.yaml", "ascend-run preflight -f job.yaml -w node[01-04] -o json"],
    "launch": ["ascend-run launch -f job.yaml --dry-run", "ascend-run launch -f job.yaml --detach",
               "ascend-run launch -f job.yaml --replace --all-lines"],
    "status": ["ascend-run status -f job.yaml -o wide", "ascend-run status --job pretrain --watch",
               "ascend-run status -f job.yaml --watch -o json"],
    "stop": ["ascend-run stop -f job.yaml --dry-run", "ascend-run stop --job pretrain"],
    "supervise": ["ascend-run supervise -f job.yaml --detach", "ascend-run supervise -f job.yaml"],
    "events": ["ascend-run events -f job.yaml", "ascend-run events --job pretrain --follow",
               "ascend-run events -f job.yaml --previous -o json"],
    "jobs": ["ascend-run jobs", "ascend-run jobs -o wide --all",
             "ASCEND_RUN_STATE_DIR=/srv/ascend-run-state ascend-run jobs -o json"],
    "logs": ["ascend-run logs -f job.yaml --follow --tail 50", "ascend-run logs -f job.yaml --tail 20",
             "ascend-run logs -f job.yaml --collect --out logs/ && "
             "ascend-run logs --loss --from logs/ --plot loss.png"],
    "exec": ["ascend-run exec -f cluster.yaml -- npu-smi info",
             "ascend-run exec -f cluster.yaml -w node[01-04] --prefix -- sh -c 'dmesg | tail -3'",
             "ascend-run exec -f cluster.yaml -o json --timeout 30 -- hccn_tool -i 0 -link -g"],
    "push": ["ascend-run push -f cluster.yaml ./conf /data/conf",
             "ascend-run push -f cluster.yaml hccl.json /etc/hccl.json -x node[05-08]",
             "ascend-run push -f cluster.yaml ./dataset /data/dataset --dry-run -o json"],
    "chart": ["ascend-run chart values train -f job.yaml --out values.yaml",
              "ascend-run chart write train --out charts/"],
    "chart values": ["ascend-run chart values train -f job.yaml --out values.yaml",
                     "ascend-run chart values infer -f infer.yaml -o json"],
    "chart write": ["ascend-run chart write train --out charts/", "ascend-run chart write infer --out charts/"],
    "ranktable": ["ascend-run ranktable -f job.yaml --out hccl.json", "ascend-run ranktable -f job.yaml --dry-run"],
    "weights": ["ascend-run weights fetch -f infer.yaml --dry-run", "ascend-run weights fetch -f infer.yaml"],
    "weights fetch": ["ascend-run weights fetch -f infer.yaml --dry-run", "ascend-run weights fetch -f infer.yaml",
                      "ascend-run weights fetch -f infer.yaml --from-node -x infer0"],
    "data": ["ascend-run data prepare -f job.yaml --dry-run", "ascend-run data prepare -f job.yaml -o json"],
    "data prepare": ["ascend-run data prepare -f job.yaml --dry-run", "ascend-run data prepare -f job.yaml"],
    "ask": ['ascend-run ask -f infer.yaml "生抽和老抽的区别是什么？" --wait 900 --stream',
            "ascend-run ask --url http://10.0.0.1:8000 hello -o json"],
    "sim": ["ascend-run sim up --servers 3 --dir .sim", "ascend-run sim status --dir .sim",
            "ascend-run sim down --dir .sim"],
    "sim up": ["ascend-run sim up --servers 3 --dir .sim", "ascend-run sim up --servers 2 --dir .sim --bastion"],
    "sim status": ["ascend-run sim status --dir .sim", "ascend-run sim status --dir .sim -o json"],
    "sim down": ["ascend-run sim down --dir .sim", "ascend-run sim down --dir .sim -o json"],
    "demo": ["ascend-run demo", "ascend-run demo --dir .sim --keep"],
    "completion": ['eval "$(ascend-run completion bash)"   # in ~/.bashrc',
                   'eval "$(ascend-run completion zsh)"    # in ~/.zshrc',
                   "ascend-run completion fish > ~/.config/fish/completions/ascend-run.fish"],
    "man": ["ascend-run man | man -l -",
            "ascend-run man --out ascend-run.1 && sudo install -m 644 ascend-run.1 /usr/local/share/man/man1/"],
}


def epilog(path: str) -> str | None:
    """The block click prints after the options (\\b: kept as written, not rewrapped)."""
    examples = EXAMPLES.get(path)
    if not examples:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples)
