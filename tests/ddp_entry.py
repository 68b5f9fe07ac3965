"""`torchrun ... tests/ddp_entry.py train ...`: the `ssat` command with the test-only tiny model registered.

With SSAT_TEST_ONE_RANK_DDP=1 a world of one process still takes the DistributedDataParallel path (process group,
DDP wrapper, distributed sampler, all-reduced metrics): one GPU cannot host two NCCL ranks, so this is how the NCCL
path is exercised on a one-GPU machine."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tiny_model  # noqa: E402,F401 (after the sys.path line above; imported to register vit_test)
from ssat import distributed  # noqa: E402 (after the sys.path line above)
from ssat.cli import main  # noqa: E402 (after the sys.path line above)

if os.environ.get("SSAT_TEST_ONE_RANK_DDP") == "1":
    class OneRankWorld(distributed.World):
        @property
        def distributed(self) -> bool:
            return True

    distributed.from_env = lambda: OneRankWorld(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]),
                                                local_rank=int(os.environ["LOCAL_RANK"]))

sys.exit(main())
