"""A node whose disk flaps full keeps every write it acknowledged (issue 9, finding 1).

The scenario is `bench.disk_flap` (real node processes, each data dir on its own tmpfs, the
leader's disk filled and flapped, then kill -9 and restart); this test runs one shortened run of
it and holds the run to the harness's own verdict, `disk_flap.problems`. Needs root to mount
the tmpfs; skips, saying why, without it.
"""

from __future__ import annotations

import pytest

from bench import disk_flap

# Shortened: 8 s of flapping instead of the 15 s, 1 s warm-up and settle; about 20 s on 2
# cores. On the build before crash-only, 6 of 6 such runs lost acknowledged writes. The disks keep
# the 300 MiB: on a quiet machine the writers fill about 75 MiB of every node's disk in such
# a run, and with 128 MiB disks (16 MiB ballast) the restarted leader stayed below its 32 MiB
# reserve, refusing writes -- and so reads, which are Raft proposals today -- by design.
SHORT_RUN = disk_flap.FlapConfig(seconds=8.0, warmup_s=1.0, settle_s=1.0)


@pytest.mark.slow
def test_a_leader_whose_disk_flaps_full_loses_no_acknowledged_write_and_replicas_hold_the_same_keys():
    reason = disk_flap.tmpfs_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    result = disk_flap.run_once(SHORT_RUN)
    assert result["acknowledged"] > 0, "no put was acknowledged: %s" % result["failure_messages"]
    assert not result["problems"], "%s\n%s" % (disk_flap.run_line(1, result), "\n".join(result["problems"]))
