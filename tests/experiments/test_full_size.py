"""The full-size configurations of `refbench bench --full-size` are the released models'."""

import pytest


@pytest.mark.parametrize(
    "kind, expected",
    [
        # Parameter counts of the released checkpoints (runwayml/stable-diffusion-v1-5 and
        # stabilityai/stable-diffusion-xl-base-1.0; the SD and SDXL papers round them to 860M and 2.6B
        # for the UNets): UNet, VAE, CLIP ViT-L/14 text encoder, OpenCLIP bigG text encoder.
        ("sd15", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
        (
            "sdxl",
            {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
        ),
    ],
)
def test_the_full_size_parts_have_the_released_models_parameter_counts(kind, expected):
    """Counted on empty (meta) weights, so nothing is allocated."""
    from refbench.bench.full_size import parameter_counts

    assert parameter_counts(kind) == expected
