"""Our network gives the official network's outputs for the same weights and input.

tests/data/model_parity/<variant>.npz holds the outputs of the official AFSD code (commit
ed86a0d, run on CPU with a pure-PyTorch boundary pooling) for the deterministic weights and clip
of model_fixtures.py: small outputs whole, large ones as sums plus a fixed subsample.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.model_fixtures import PARITY, generated_clip, generated_state_dict, key_layout, summarise_outputs

from afsd_cli.model import AFSD, anet_spec, thumos14_spec

pytestmark = pytest.mark.slow  # three full-size forwards (≈ 20 s on 2 idle cores)

# variant: (spec, weight seed, loc bias, clip shape)
CASES = {
    "thumos14_rgb": (thumos14_spec(), 0, 2.5, (1, 3, 256, 96, 96)),
    "thumos14_flow": (thumos14_spec(in_channels=2), 10, 2.5, (1, 2, 256, 96, 96)),
    "anet_rgb": (anet_spec(), 20, 1.0, (1, 3, 768, 96, 96)),
}


@pytest.mark.parametrize("variant", list(CASES))
def test_outputs_match_official_network(variant):
    spec, seed, loc_bias, clip_shape = CASES[variant]
    expected = dict(np.load(PARITY / f"{variant}.npz"))
    model = AFSD(spec).eval()
    model.load_state_dict(generated_state_dict(key_layout(variant), seed=seed, loc_bias=loc_bias), strict=True)
    with torch.no_grad():
        outputs = model(generated_clip(clip_shape, seed=seed + 1))._asdict()
    got = summarise_outputs(outputs)
    assert sorted(got) == sorted(expected)
    for name, reference in expected.items():
        if name.endswith("__shape"):
            assert got[name].tolist() == reference.tolist(), name
        else:
            np.testing.assert_allclose(got[name], reference, rtol=1e-4, atol=1e-4, err_msg=f"{variant} {name}")


@pytest.mark.parametrize(("variant", "spec"), [("thumos14_rgb", thumos14_spec()), ("anet_rgb", anet_spec())])
def test_seeded_initialisation_matches_official_network(variant, spec):
    """Same seed → same initial weights as the official BDNet (same modules, same init order).

    official_init_sums.json: [sum, sum of |w|] of a few tensors of the official model built
    right after ``torch.manual_seed(2020)`` (the official training seed).
    """
    import json

    expected = json.loads((PARITY / "official_init_sums.json").read_text())[variant]
    torch.manual_seed(2020)
    state = AFSD(spec).state_dict()
    for key, (total, absolute) in expected.items():
        value = state[key].double()
        np.testing.assert_allclose([value.sum().item(), value.abs().sum().item()], [total, absolute], rtol=1e-9, err_msg=key)
