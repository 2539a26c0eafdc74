"""Stands in for run_deepseekv3_predict.py on CPUs: joins the cluster like the predict script and reports
what every rank sees (world size, the inference environment), then answers with a fixed sentence.

The real script loads the 671B BF16 weights onto 32 NPUs; here each rank only proves that the inference
launch form (msrun_launcher.sh "<script>" 32 8 $master_ip 8888 k …) and its environment reach it.
"""

import os

from mindspore import set_context
from mindspore.communication import get_group_size, get_rank, init

PROMPT = "生抽和老抽的区别是什么？"

set_context(device_target="CPU")
init()
rank, size = get_rank(), get_group_size()
print(f"rank {rank}: world size {size}, HCCL_OP_EXPANSION_MODE={os.environ.get('HCCL_OP_EXPANSION_MODE')}, "
      f"MS_ENABLE_LCCL={os.environ.get('MS_ENABLE_LCCL')}", flush=True)
if rank == 0:
    print(f"question: {PROMPT}\nanswer: (CPU stand-in) 生抽颜色浅、偏咸，用于调味；老抽颜色深、偏甜，用于上色。", flush=True)
