"""Tests of the fault schedule of `scripts/chaos`: the seed alone decides it.
Run: `python3 -m unittest discover -s scripts -p 'chaos_*test.py'`."""

import importlib.machinery
import importlib.util
import os
import unittest

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaos")
loader = importlib.machinery.SourceFileLoader("chaos", PATH)
chaos = importlib.util.module_from_spec(importlib.util.spec_from_loader("chaos", loader))
loader.exec_module(chaos)


class ScheduleTest(unittest.TestCase):
    def test_a_seed_reproduces_its_schedule(self):
        # Goal: the same seed gives the same faults, another seed other faults.
        self.assertEqual(chaos.fault_schedule(7, 600), chaos.fault_schedule(7, 600))
        self.assertNotEqual(chaos.fault_schedule(7, 600), chaos.fault_schedule(8, 600))

    def test_a_long_run_has_every_kind_several_a_minute_and_one_at_a_time_per_target(self):
        # Goal: ten minutes bring every fault kind, at least three a minute, and never two at once on one target.
        schedule = chaos.fault_schedule(7, 600)
        self.assertEqual({fault["kind"] for fault in schedule}, set(chaos.FAULT_KINDS))
        self.assertGreaterEqual(len(schedule), 30)
        last_end = {}
        for fault in schedule:
            self.assertGreaterEqual(fault["at"], last_end.get(fault["target"], 0))
            last_end[fault["target"]] = fault["at"] + fault["duration"]

    def test_a_cluster_run_has_every_cluster_fault_several_times_one_at_a_time(self):
        # Goal: ten minutes on a cluster bring each failover fault several times, each on a shard,
        # never two on the cluster at once, and no restart of a single Redis; the single-Redis
        # schedule of a seed is what it was before the cluster mode.
        schedule = chaos.fault_schedule(7, 600, cluster=True)
        kinds = [fault["kind"] for fault in schedule]
        self.assertEqual(set(kinds), set(chaos.CLUSTER_FAULT_KINDS))
        for kind in chaos.chaos_cluster.CLUSTER_FAULT_KINDS:
            self.assertGreaterEqual(kinds.count(kind), 3, kind)
        cluster_faults = [fault for fault in schedule if fault["target"] == "redis"]
        self.assertTrue(all(fault["shard"] in (0, 1, 2) for fault in cluster_faults))
        for before, after in zip(cluster_faults, cluster_faults[1:]):
            self.assertGreaterEqual(after["at"], before["at"] + before["duration"])
        self.assertTrue(all("shard" not in fault for fault in chaos.fault_schedule(7, 600)))


if __name__ == "__main__":
    unittest.main()
