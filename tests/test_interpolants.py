import numpy as np
import torch

from amcore.interpolants import SnapshotPath, ot_pairs
from amcore.store import Snapshots


def _snaps(n=64, times=(0.0, 1.0, 3.0)):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((n, 2)) + 4 * k for k in range(len(times))])
    return Snapshots.from_labels(x.astype(np.float32), np.repeat(times, n))


def test_exact_ot_between_equal_clouds_is_a_permutation():
    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((40, 2)), rng.standard_normal((40, 2))
    ia, ib, w = ot_pairs(xa, xb, max_size=100, rng=rng)
    assert sorted(ia) == list(range(40)) and sorted(ib) == list(range(40))
    np.testing.assert_allclose(w, 1 / 40)
    # Translating one cloud does not change the optimal assignment (squared Euclidean cost).
    ja, jb, _ = ot_pairs(xa, xb + 5.0, max_size=100, rng=rng)
    assert dict(zip(ia, ib, strict=True)) == dict(zip(ja, jb, strict=True))


def test_samples_lie_on_segments_between_neighbouring_snapshots():
    snaps = _snaps()
    for coupling in ("independent", "ot"):
        path = SnapshotPath(snaps, coupling=coupling)
        gen = torch.Generator().manual_seed(0)
        t, xt, u = path.sample(2000, gen)
        assert t.min() >= 0.0 and t.max() <= 3.0
        # Going back along the pair's velocity to the left observed time lands on a cell of that time.
        k = (torch.searchsorted(path.t_values, t, right=True) - 1).clamp(0, 1)
        xa = xt - (t - path.t_values[k])[:, None] * u
        left = torch.as_tensor(snaps.x)[torch.as_tensor(snaps.offsets)[k][:, None] + torch.arange(64)]
        dist = (left - xa[:, None]).norm(dim=-1).min(dim=1).values
        assert dist.max() < 1e-4, coupling


def test_stratified_times_cover_the_interval_evenly():
    path = SnapshotPath(_snaps(), coupling="independent")
    t = path.sample_times(1000, torch.Generator().manual_seed(0))
    counts = torch.histc(t, bins=10, min=0.0, max=3.0)
    assert torch.all(counts == 100)
