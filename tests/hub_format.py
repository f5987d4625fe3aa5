"""Turn a saved tiny checkpoint into the published hub format where it matters for page geometry.

The published preprocessor_config.json of Qwen2-VL-2B/7B-Instruct (a fact, kept as data): top-level
min/max pixels and no ``size``, which transformers lets override any ``size`` passed at load time.
"""

import json
import shutil
from pathlib import Path

QWEN2_VL_2B_INSTRUCT_PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2VLProcessor",
}


def hub_format_qwen2_vl(source: Path, out: Path) -> Path:
    """A copy of ``source`` whose preprocessor config is Qwen2-VL-2B-Instruct's, verbatim."""
    shutil.copytree(source, out)
    (out / "preprocessor_config.json").write_text(json.dumps(QWEN2_VL_2B_INSTRUCT_PREPROCESSOR, indent=2))
    return out
