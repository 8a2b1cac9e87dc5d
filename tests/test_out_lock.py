"""The output root's lease (issue 11, item 6): one writer per root, stale leases recovered, real files."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.sinks.out_lock import LOCK_FILE, OutputLock, OutputLockedError


def test_a_second_writer_is_refused_in_one_line_and_can_take_over_after_release(tmp_path: Path) -> None:
    first = OutputLock(str(tmp_path), command="smite segment a")
    with first:
        lease = json.loads((tmp_path / LOCK_FILE).read_text())
        assert lease["token"] == first.lease.token and lease["command"] == "smite segment a"
        refused = r"another run is writing here \(pid \d+ on .*smite segment a"
        with pytest.raises(OutputLockedError, match=refused) as err:
            OutputLock(str(tmp_path)).acquire()
        assert "\n" not in str(err.value)
    assert not (tmp_path / LOCK_FILE).exists()
    with OutputLock(str(tmp_path)):
        assert (tmp_path / LOCK_FILE).exists()


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path: Path) -> None:
    with OutputLock(str(tmp_path), ttl=0.8):
        before = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
        time.sleep(1.2)  # beats every ttl / 4: the lease never goes stale while held
        after = json.loads((tmp_path / LOCK_FILE).read_text())["heartbeat"]
        assert after > before
        with pytest.raises(OutputLockedError):
            OutputLock(str(tmp_path)).acquire()


def test_a_lease_whose_owner_was_killed_is_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(  # a real run that takes the lease and is killed with it held
        [sys.executable, "-c", "from pipeline.sinks.out_lock import OutputLock; "
         f"OutputLock({str(tmp_path)!r}).acquire(); print('held', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputLockedError):
        OutputLock(str(tmp_path)).acquire()
    holder.kill()
    holder.wait()
    with OutputLock(str(tmp_path)) as lock:  # same host, dead pid: stale at once
        assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.lease.token


def test_a_lease_without_heartbeat_for_its_ttl_is_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({
        "token": "t", "host": "another-host", "pid": 1, "command": "smite segment", "started": 0.0,
        "heartbeat": time.time() - 120, "ttl": 60.0,
    }))
    with OutputLock(str(tmp_path)) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["token"] == lock.lease.token
