"""Strong-view augmentations of vlml.data.transforms: shapes, determinism, edge cases."""

import numpy as np
from PIL import Image

from vlml.data.transforms import (
    cutout,
    feature_noise,
    strong_features,
    strong_tokens,
    token_dropout,
)


def tokens(b=3, n=10, d=4):
    # token j of image i holds the value 100 i + j everywhere, so the kept indices are readable
    return (100 * np.arange(b)[:, None, None] + np.arange(n + 1)[None, :, None]
            + np.zeros((1, 1, d))).astype(np.float32)


def test_token_dropout_keeps_token_zero_and_the_order():
    x = tokens()
    out = token_dropout(x, 0.3, np.random.default_rng(0))
    assert out.shape == (3, 1 + 7, 4)
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    kept = out[:, 1:, 0] - 100 * np.arange(3)[:, None]
    assert (np.diff(kept, axis=1) > 0).all() and kept.min() >= 1 and kept.max() <= 10
    # at least one spatial token survives; nothing to drop leaves x alone
    assert token_dropout(x, 0.99, np.random.default_rng(0)).shape == (3, 2, 4)
    assert token_dropout(x, 0.0, np.random.default_rng(0)) is x
    one = x[:, :2]  # token 0 and a single spatial token
    assert token_dropout(one, 0.5, np.random.default_rng(0)) is one


def test_feature_noise_scales_with_the_rms_and_is_seeded():
    x = np.full((2000, 8), 3.0, dtype=np.float32)
    a = feature_noise(x, 0.1, np.random.default_rng(1))
    b = feature_noise(x, 0.1, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and abs(float((a - x).std()) - 0.3) < 0.01
    assert feature_noise(x, 0.0, np.random.default_rng(1)) is x


def test_strong_views_compose_the_transforms():
    x = tokens()
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    got = strong_tokens(0.5, 0.1)(x, rng_a)
    want = feature_noise(token_dropout(x, 0.5, rng_b), 0.1, rng_b)
    np.testing.assert_array_equal(got, want)
    f = x[:, 0]
    np.testing.assert_array_equal(strong_features(0.2)(f, np.random.default_rng(3)),
                                  feature_noise(f, 0.2, np.random.default_rng(3)))


def test_cutout_paints_one_clipped_rectangle():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    assert cutout(image, 0.0, np.random.default_rng(0)) is image
    out = np.asarray(cutout(image, 0.5, np.random.default_rng(4)))
    assert np.asarray(image).sum() == 0  # the input is not changed
    painted = np.argwhere(out.any(axis=2))
    if painted.size:  # a black fill is possible in principle, not with this seed
        h, w = painted.max(0) - painted.min(0) + 1
        assert h <= 11 and w <= 21
        assert out[painted[:, 0], painted[:, 1]].std(axis=0).max() == 0  # one colour
