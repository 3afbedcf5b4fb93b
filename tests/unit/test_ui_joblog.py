"""What a job page reads from a replication's log: bytes of blobs on their way count
before the blob is done."""

from __future__ import annotations

from pathlib import Path

from actors.http.ui._joblog import read_log

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_a_blob_on_its_way_counts_its_bytes_sent_and_a_finished_one_its_size(
    tmp_path: Path,
) -> None:
    log = tmp_path / "job_1.log"
    lines = [
        "state transfer_blob (from check)",
        f"blob {A}: 8388608 of 104857600 bytes sent",
        f"blob {B}: 1000 of 3000 bytes sent",
        f"blob {A}: 16777216 of 104857600 bytes sent",
        f"blob {B} (3000 bytes) sent (0.100 s)",
    ]
    log.write_text("".join(f"2026-12-02T17:00:00.000+00:00 [INFO] {line}\n" for line in lines))

    progress = read_log(str(log)).progress
    assert progress.blobs_done == 1
    assert progress.bytes_sent == 16777216 + 3000
    assert progress.partial == {A: 16777216}
