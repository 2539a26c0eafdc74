"""Shared helpers for the tests/test_mfconfig_*.py files: the real MindFormers configs, read in place."""

from __future__ import annotations

import pytest

from tests.reference import REFERENCE as SHARED_REFERENCE

REFERENCE = SHARED_REFERENCE / "mindformers"

R15_PRETRAIN = REFERENCE / "r1.5.0" / "pretrain_deepseek3_671b.yaml"
R15_FINETUNE = REFERENCE / "r1.5.0" / "finetune_deepseek3_671b.yaml"
R15_PREDICT = REFERENCE / "r1.5.0" / "predict_deepseek3_671b.yaml"
V21_PRETRAIN = REFERENCE / "v2.1.0" / "pretrain_deepseek3_671b.yaml"
V21_PREDICT = REFERENCE / "v2.1.0" / "predict_deepseek3_671b.yaml"
V21_PYNATIVE = REFERENCE / "v2.1.0" / "pretrain_deepseek3_1b_8p_pynative.yaml"

needs_reference = pytest.mark.skipif(not R15_PRETRAIN.exists(),
                                     reason=f"MindFormers reference configs not found under {REFERENCE}")
