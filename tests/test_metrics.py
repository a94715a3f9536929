"""Per-volume metrics from one pass: Dice against an independent numpy/scipy computation, LCC cases,
DDP duplicates, every metric as functional.volume_metrics gives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from brainseg.metrics import COUNTS, METRICS, VolumeMetrics, slice_metrics, volume_metrics
from brainseg.postprocessing.steps import largest_component


def _independent_volume_dice(prob: np.ndarray, truth: np.ndarray, lcc: bool) -> float:
    """Straight from the definition: threshold, keep the largest face-connected blob, Dice."""
    pred = prob > 0.5
    if lcc and pred.any():
        labels, n = ndimage.label(pred, structure=ndimage.generate_binary_structure(3, 1))
        sizes = [(labels == i).sum() for i in range(1, n + 1)]
        pred = labels == (1 + sizes.index(max(sizes)))
    if pred.sum() + truth.sum() == 0:
        return 1.0
    return 2 * (pred & truth).sum() / (pred.sum() + truth.sum())


def _dice(metric: VolumeMetrics) -> list[float]:
    """Per-volume Dice in patient order."""
    return [scores["dsc"] for scores in metric.compute().values()]


def _feed(
    metric: VolumeMetrics,
    volumes: dict[int, tuple[np.ndarray, np.ndarray]],
    batch: int = 3,
    order=None,
) -> None:
    rows = [(p, z) for p, (prob, _) in volumes.items() for z in range(len(prob))]
    if order is not None:
        rows = [rows[i] for i in order]
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        metric.update(
            torch.tensor(np.stack([volumes[p][0][z] for p, z in chunk]))[:, None],
            torch.tensor(np.stack([volumes[p][1][z] for p, z in chunk]), dtype=torch.float32)[
                :, None
            ],
            torch.tensor([p for p, _ in chunk]),
            torch.tensor([z for _, z in chunk]),
        )


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.zeros((6, 12, 12), bool)
    truth[2:5, 3:8, 4:9] = True
    prob = np.clip(truth * 0.7 + rng.normal(0, 0.25, truth.shape), 0, 1).astype(np.float32)
    return prob, truth


@pytest.mark.parametrize("lcc", [True, False])
def test_matches_independent_computation_in_any_order(lcc: bool) -> None:
    volumes = {p: _random_case(p) for p in range(4)}
    expected = {
        p: _independent_volume_dice(prob, truth, lcc) for p, (prob, truth) in volumes.items()
    }
    metric = VolumeMetrics(postprocess=largest_component if lcc else None)
    order = np.random.default_rng(0).permutation(sum(len(v[0]) for v in volumes.values()))
    _feed(metric, volumes, order=order)
    assert list(metric.compute()) == [0, 1, 2, 3]
    np.testing.assert_allclose(_dice(metric), [expected[p] for p in range(4)])
    assert len({round(v, 6) for v in expected.values()}) > 1  # the cases differ


def test_larger_false_positive_blob_wins_the_lcc() -> None:
    truth = np.zeros((4, 10, 10), bool)
    truth[1:3, 1:3, 1:3] = True  # 8 voxels, found exactly
    prob = truth.astype(np.float32)
    prob[0:4, 5:9, 5:9] = 0.9  # 64 false-positive voxels, not face-connected to the truth
    metric = VolumeMetrics(postprocess=largest_component)
    _feed(metric, {0: (prob, truth)})
    assert _dice(metric) == [0.0]
    no_lcc = VolumeMetrics()
    _feed(no_lcc, {0: (prob, truth)})
    assert _dice(no_lcc) == [pytest.approx(2 * 8 / (8 + 72))]


def test_two_equal_components_keep_the_first_in_scan_order() -> None:
    truth = np.zeros((2, 8, 8), bool)
    truth[0, 1:3, 1:3] = True
    prob = np.zeros((2, 8, 8), np.float32)
    prob[0, 1:3, 1:3] = 0.8  # first component (found first in slice/row/column order) = the truth
    prob[1, 5:7, 5:7] = 0.8  # equally large, later
    metric = VolumeMetrics(postprocess=largest_component)
    _feed(metric, {0: (prob, truth)})
    assert _dice(metric) == [1.0]
    assert _independent_volume_dice(prob, truth, True) == 1.0


def test_diagonal_neighbours_are_separate_components() -> None:
    truth = np.zeros((1, 4, 4), bool)
    truth[0, 0, 0] = True
    prob = np.zeros((1, 4, 4), np.float32)
    prob[0, 0, 0] = prob[0, 1, 1] = prob[0, 2, 2] = (
        0.9  # three 1-voxel components under face connectivity
    )
    metric = VolumeMetrics(postprocess=largest_component)
    _feed(metric, {0: (prob, truth)})
    assert _dice(metric) == [1.0]


def test_empty_predictions_and_empty_truth_never_crash() -> None:
    prob = np.full((3, 6, 6), 0.3, np.float32)  # all in (0, 0.5): nothing predicted
    lesion = np.zeros((3, 6, 6), bool)
    lesion[1, 2:4, 2:4] = True
    metric = VolumeMetrics(postprocess=largest_component)
    _feed(
        metric,
        {
            0: (prob, lesion),
            1: (prob, np.zeros_like(lesion)),
            2: (np.full_like(prob, 0.9), np.zeros_like(lesion)),
        },
    )
    assert _dice(metric) == [0.0, 1.0, 0.0]
    assert VolumeMetrics().compute() == {}


def test_repeated_slices_count_once() -> None:
    """A DistributedSampler pads with repeats; the same (patient, slice) must not count twice."""
    volumes = {p: _random_case(p + 10) for p in range(2)}
    clean, padded = (VolumeMetrics(postprocess=largest_component) for _ in range(2))
    _feed(clean, volumes)
    _feed(padded, volumes)
    _feed(padded, {0: (volumes[0][0][:2], volumes[0][1][:2])})  # slices 0 and 1 of patient 0 again
    assert padded.compute() == clean.compute()


def test_one_pass_gives_every_metric_of_the_postprocessed_volume() -> None:
    """compute() scores each assembled, post-processed volume once with volume_metrics."""
    volumes = {p: _random_case(p + 20) for p in range(2)}
    metric = VolumeMetrics(postprocess=largest_component, nsd_tolerance=1.5)
    _feed(metric, volumes)
    expected = {
        p: volume_metrics(largest_component(prob > 0.5), truth, tolerance=1.5)
        for p, (prob, truth) in volumes.items()
    }
    assert metric.compute() == expected


def test_every_per_volume_value_is_a_named_metric_or_count() -> None:
    """The tables take their columns from METRICS and COUNTS: volume_metrics gives no other key."""
    prob, truth = _random_case(4)
    assert set(volume_metrics(prob > 0.5, truth)) == {*METRICS, *COUNTS}


def test_slice_metrics_against_numpy() -> None:
    prob, truth = _random_case(3)
    metrics = slice_metrics()
    metrics.update(torch.tensor(prob).flatten(1), torch.tensor(truth).flatten(1).int())
    values = {k: float(v.float().mean()) for k, v in metrics.compute().items()}
    pred = prob > 0.5
    per_slice = [
        1.0 if p.sum() + t.sum() == 0 else 2 * (p & t).sum() / (p.sum() + t.sum())
        for p, t in zip(pred, truth)
    ]
    assert values["dsc_slice"] == pytest.approx(np.mean(per_slice), rel=1e-5)
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    assert values["iou_pixel"] == pytest.approx(tp / (tp + fp + fn), rel=1e-5)
    assert values["precision_pixel"] == pytest.approx(tp / (tp + fp), rel=1e-5)
    assert values["recall_pixel"] == pytest.approx(tp / (tp + fn), rel=1e-5)
