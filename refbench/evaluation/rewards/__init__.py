"""The paper's five reward models as metrics of ``refbench.evaluation.metrics`` (kind ``reward-model``).

| metric            | model and formula                                                   | default source |
|-------------------|---------------------------------------------------------------------|----------------|
| ``pickscore``     | logit_scale.exp() * cos, PickScore CLIP-H (transformers)            | ``yuvalkirstain/PickScore_v1`` |
| ``hpsv2``         | 100 * cos, open_clip ViT-H-14 + HPSv2 checkpoint                    | ``xswu/HPSv2`` (``HPS_v2_compressed.pt``) |
| ``clip``          | 100 * cos, open_clip ViT-H-14 laion2b_s32b_b79k                     | ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` |
| ``laion-aesthetic`` | MLP(normalised CLIP ViT-L/14 image embedding)                     | ``sac+logos+ava1-l14-linearMSE.pth`` (GitHub) |
| ``imagereward``   | ImageReward's score, BLIP rebuilt from transformers (``_blip.py``)  | ``THUDM/ImageReward`` (alias ``ImageReward-v1.0``) |

Pick a source with ``get_metric("pickscore=/local/folder")`` (or a hub id); each module's
docstring lists the accepted forms. Weights load on the first call (cached per name and
source), on ``REFBENCH_DEVICE`` (default ``cpu``), in batches of ``REFBENCH_REWARD_BATCH``
(default 32) images, in eval mode under ``torch.no_grad``. Importing this package is cheap:
torch, transformers and open_clip are imported only when a model loads.

Tested: tiny random-weight models of the same architectures, built offline from configs and
loaded through the same code as real weights. Not tested: the real weights, which were never
loaded (refbench was developed without access to a model hub).
"""

from . import aesthetic, clip_score, hpsv2, imagereward, pickscore  # noqa: F401  (registers the metrics)

REWARD_METRICS: tuple[str, ...] = ("pickscore", "hpsv2", "clip", "laion-aesthetic", "imagereward")
