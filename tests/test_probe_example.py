"""The worked example of docs/extending.md ("A head score with a new statistic"): a probe and a score, defined
here and nowhere in the package, run through the unmodified pipeline. The probe records each producing
row's attention mass on the image tokens; the score ``page_mass`` is its mean over every generated token's row.
The probe's numbers must equal eager attention computed plainly here. The score is not registered: it
would change every ``--score`` listing (the registered ``image_mass`` reads the answer tokens' rows only, through
the shared producing-row probe)."""

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ocr_heads import scores
from ocr_heads.attention import capture
from ocr_heads.attention.eager import eager_attention_rows
from ocr_heads.attention.probabilities import attention_probabilities
from ocr_heads.attention.probes import AttentionCall, Probe, ProbeRecord
from ocr_heads.data.samples import Sample, load_samples
from ocr_heads.models.base import ModelInputs
from ocr_heads.pipeline.sample_scoring import score_batch, score_sample
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


# --- the probe (in the package: a class in ocr_heads/attention/probes.py) ---------------------------------
@dataclass(frozen=True)
class ImageMassResult:
    """Result of :class:`ImageMass`."""

    mass: torch.Tensor  # (steps, layers, heads): each producing row's probability on the image tokens


@dataclass(frozen=True)
class ImageMass(Probe[ImageMassResult]):
    """Each producing row's total attention probability on the sample's image tokens."""

    positions: tuple[int, ...]  # the image tokens, in the sample's own coordinates

    def on_prefill(self, call: AttentionCall) -> torch.Tensor:
        return self.on_decode(call)  # at prefill, the producing row is the prompt's last row

    def on_decode(self, call: AttentionCall) -> torch.Tensor:
        last = [call.query.shape[2] - 1]  # one row: (heads x keys) floats, never the whole matrix
        probs = attention_probabilities(call.query, call.key, call.attention_mask, last, scaling=call.scaling)
        return probs[0, :, 0, [call.key_index(p) for p in self.positions]].sum(-1)  # (heads,)

    def result(self, record: ProbeRecord) -> ImageMassResult:
        return ImageMassResult(record.per_step(float("nan"), "image mass"))  # NaN: layers without attention
# --- end of the probe ------------------------------------------------------------------------------------


# --- the score (in the package: ocr_heads/scores/registered/page_mass.py) - -------------------------------
def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    image = [p for tokens in inputs.image_tokens for p in tokens.positions]
    return Recording(probes=(ImageMass(tuple(image)),))


def values(observed: Observed, settings: Settings) -> SampleValues:
    mass = observed.probe(ImageMass).mass.numpy().astype(np.float64)  # (steps, layers, heads)
    return SampleValues(mass.mean(axis=0, keepdims=True), events=len(mass))  # one row per sample


SCORE = HeadScore(
    name="page_mass",
    tag="pmass",
    modality="image",
    summary="how much each head looks at the page while it writes: every producing row's mass on the image tokens",
    recording=recording,
    values=values,
    alignments=("produce",),
    design=DesignPoint("producing", "mass", "image", "an example: docs/extending.md"),
)
# --- end of the score ------------------------------------------------------------------------------------


def eager_image_mass(adapter, inputs, generated: list[int]) -> torch.Tensor:
    """(steps, layers, heads): the same statistic from eager attention's full matrices, the plain way."""
    image = [p for tokens in inputs.image_tokens for p in tokens.positions]
    rows = eager_attention_rows(adapter, inputs, generated)  # layer -> (heads, steps, keys)
    return torch.stack([rows[layer][:, :, image].sum(-1).T for layer in sorted(rows)], dim=1)


def test_image_mass_probe_equals_eager(tiny_adapter, passkey_dir):
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    image = tuple(p for tokens in inputs.image_tokens for p in tokens.positions)
    with capture(tiny_adapter) as recorder:
        recorder.reset(inputs.prompt_length, [ImageMass(image)])
        generated = tiny_adapter.generate(inputs, max_new_tokens=4)
        mass = recorder.probe_result(ImageMass).mass
    assert tiny_adapter.model.dtype == torch.float32
    assert mass.shape == (len(generated), 3, 4)
    torch.testing.assert_close(mass, eager_image_mass(tiny_adapter, inputs, generated), atol=1e-5, rtol=0)


def test_page_mass_score_runs_through_the_pipeline_batched_as_alone(tiny_adapter, passkey_dir):
    """Nothing else was edited: the unmodified runner records the probe, one result per sample of a
    left-padded batch, equal to each sample alone and to eager attention."""
    samples = load_samples(passkey_dir)[2:5]  # one page, two pages, two pages
    with capture(tiny_adapter) as recorder:
        together = score_batch(tiny_adapter, recorder, samples, SCORE, Settings(), 4)
        alone = [score_sample(tiny_adapter, recorder, s, SCORE, Settings(), 4) for s in samples]
    assert len({r.inputs.prompt_length for r in alone}) > 1  # prompts of different lengths: left padded
    for batched, single in zip(together, alone, strict=True):
        assert batched.generated == single.generated
        np.testing.assert_allclose(batched.scored.values, single.scored.values, atol=1e-5, rtol=0)
        expected = eager_image_mass(tiny_adapter, single.inputs, single.generated).mean(0, keepdim=True)
        np.testing.assert_allclose(single.scored.values, expected.numpy(), atol=1e-5, rtol=0)
        assert single.scored.events == len(single.generated)
    assert "page_mass" not in scores.all_scores() and "pmass" not in {s.tag for s in scores.all_scores().values()}


def _code(text: str) -> str:
    """Code without the lines where a package module and this file differ: imports (the doc's score imports
    the probe from the package, this file defines it) and blank lines."""
    skip = ("from ", "import ", "if TYPE_CHECKING:")
    return "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(skip))


def test_the_doc_shows_this_code():
    section = DOC.read_text().split("### Worked example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2  # the probe and the score module: nothing else
    here = _code(Path(__file__).read_text())
    for block in blocks:
        assert _code(block).strip() in here


def test_listing_scores_imports_no_torch():
    """Why score modules import their probes inside their functions."""
    code = "import sys; from ocr_heads import scores; scores.all_scores(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
