"""Several ModelRunners in one process sharing the process groups.

With SGLANG_ALLOW_REUSE_DISTRIBUTED=true, a second ModelRunner-like
initialization in the same process reuses the world, TP and PP groups the
first one created; with the variable unset, the second one fails as before.

Runs on the CPU: a real gloo process group of one rank.

Usage:
python3 -m unittest test_reuse_distributed
"""

import inspect
import os
import tempfile
import unittest
from unittest import mock

import torch.distributed as dist

from sglang.srt.distributed import parallel_state as ps
from sglang.test.ci.ci_register import register_cpu_ci

register_cpu_ci(est_time=30, suite="base-a-test-cpu")

REUSE_ENV = "SGLANG_ALLOW_REUSE_DISTRIBUTED"
SIZES = dict(
    tensor_model_parallel_size=1,
    expert_model_parallel_size=1,
    pipeline_model_parallel_size=1,
)


def _sizes(fn, **overrides):
    """The parallel sizes fn takes (they moved between releases), one rank each."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in {**SIZES, **overrides}.items() if k in params}


class TestReuseDistributed(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.store = f"file://{os.path.join(self._tmp.name, 'store')}"

    def tearDown(self):
        try:
            ps.destroy_model_parallel()
            ps.destroy_distributed_environment()
            # groups destroy_model_parallel leaves set in some releases; the
            # process group below them goes with destroy_process_group
            for name, group in list(vars(ps).items()):
                if name.startswith("_") and isinstance(group, ps.GroupCoordinator):
                    setattr(ps, name, None)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            self._tmp.cleanup()

    def _init_model_runner(self):
        """The distributed setup each ModelRunner does, for one CPU rank."""
        ps.init_distributed_environment(
            backend="gloo",
            world_size=1,
            rank=0,
            local_rank=0,
            distributed_init_method=self.store,
        )
        ps.initialize_model_parallel(
            **_sizes(ps.initialize_model_parallel), backend="gloo"
        )
        if hasattr(ps, "ensure_model_parallel_initialized"):
            fn = ps.ensure_model_parallel_initialized
            fn(**_sizes(fn), backend="gloo")

    def test_second_runner_fails_without_the_variable(self):
        with mock.patch.dict(os.environ, {REUSE_ENV: "false"}):
            self._init_model_runner()
            with self.assertRaises(AssertionError):
                self._init_model_runner()

    def test_second_runner_reuses_the_groups(self):
        with mock.patch.dict(os.environ, {REUSE_ENV: "true"}):
            self._init_model_runner()
            world, tp, pp = ps._WORLD, ps._TP, ps._PP
            self._init_model_runner()
            self.assertIs(ps._WORLD, world)
            self.assertIs(ps._TP, tp)
            self.assertIs(ps._PP, pp)

    def test_reuse_needs_the_same_sizes(self):
        with mock.patch.dict(os.environ, {REUSE_ENV: "true"}):
            self._init_model_runner()
            tp = ps._TP
            fn = getattr(ps, "ensure_model_parallel_initialized", None)
            if fn is None or "tensor_model_parallel_size" not in _sizes(fn):
                self.skipTest("the sizes come from the server's parallel config")
            with self.assertRaisesRegex(RuntimeError, REUSE_ENV):
                fn(**_sizes(fn, tensor_model_parallel_size=2))
            self.assertIs(ps._TP, tp)


if __name__ == "__main__":
    unittest.main()
