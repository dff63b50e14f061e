"""Request and response bodies (pydantic), with examples that run against the default checkpoint."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

IMAGE_PNG: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/png": {}}, "description": "a PNG (a grid when several images)"}
}
# The largest integer a JSON number holds exactly everywhere (JavaScript's Number.MAX_SAFE_INTEGER).
MAX_SEED = 2**53 - 1


def _integral(value: object) -> object:
    """JSON Schema counts 6.0 as an integer, so this service does too (6.5, "6" and true stay errors)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]
# The bounds inside the type and before the validator: else pydantic writes them into an optional field's schema as
# unknown keywords (ge, le) that no client reads.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_integral)]


class BreedInfo(BaseModel):
    name: str
    photos: int = Field(description="training photos of this breed in the data set")


class BreedList(BaseModel):
    breeds: list[BreedInfo]


class BreedProbability(BaseModel):
    breed: str
    probability: float = Field(ge=0, le=1)


DOG_PROBABILITY = (
    "how much the pretrained trunk's ImageNet classifier sees a dog in the photo (its probability mass on dog "
    "classes): near 1 for dog photos, near 0 for a cat, a car or a drawing"
)
LOOKS_LIKE_A_DOG = (
    "false when the dog probability is below the checkpoint's measured threshold: the breeds are then a guess"
)


class Identification(BaseModel):
    breeds: list[BreedProbability] = Field(description="best first; calibrated probabilities")
    dog_probability: float = Field(ge=0, le=1, description=DOG_PROBABILITY)
    looks_like_a_dog: bool = Field(description=LOOKS_LIKE_A_DOG)
    note: str | None = Field(None, description="what to make of the answer, when it needs saying")


class Encoding(BaseModel):
    mean: list[float] = Field(description="posterior mean of z")
    log_var: list[float] = Field(description="posterior log-variance of z")
    breeds: list[BreedProbability] = Field(description="q(breed | photo), best first")


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    if not weights:
        raise ValueError('give at least one breed with a weight, e.g. {"beagle": 1}')
    for name, w in weights.items():
        if not math.isfinite(w):
            raise ValueError(f"the weight of {name!r} is not a finite number")
        if w < 0:
            raise ValueError(f"the weight of {name!r} is negative; weights must be >= 0")
    if sum(weights.values()) <= 0:
        raise ValueError("the weights are all zero; give at least one positive weight")
    return weights


class MixRequest(BaseModel):
    # strict: JSON true/false or "3" are not numbers here (lax mode would read them as 1/0/3)
    model_config = ConfigDict(
        strict=True,
        extra="forbid",  # a misspelt field is an error, not ignored
        json_schema_extra={"examples": [{"breeds": {"beagle": 0.5, "samoyed": 0.5}, "seed": 7, "n": 4}]},
    )

    breeds: dict[str, float] = Field(
        description="breed name -> weight (>= 0, at least one above 0; normalised to sum to 1)"
    )
    seed: Seed | None = Field(None, description="same seed = same pose noise for any mix")
    n: Integer = Field(1, ge=1, description="how many dogs")
    temperature: float = Field(1.0, ge=0, le=3, description="scale of the latent noise; 0 gives the mix's mean dog")
    scale: Integer = Field(1, ge=1, description="nearest-neighbour upscale of the output")

    _weights = field_validator("breeds")(check_weights)


class DecodeRequest(BaseModel):
    # The example is one latent of the default checkpoint's size (4 channels at 16x16);
    # tests/app/test_openapi_examples.py runs it.
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"examples": [{"latents": [[0.0] * 1024], "breeds": {"golden_retriever": 1}}]},
    )

    latents: list[list[float]] = Field(min_length=1, description="latent vectors z, each of the model's latent size")
    breeds: dict[str, float] | None = Field(
        None, description="breed weights to decode with; default: the breeds whose priors best explain each z"
    )
    scale: Integer = Field(1, ge=1)

    @field_validator("latents")
    @classmethod
    def _finite(cls, latents: list[list[float]]) -> list[list[float]]:
        if any(not math.isfinite(v) for row in latents for v in row):
            raise ValueError("latents must be finite numbers (no NaN or infinity)")
        return latents

    @field_validator("breeds")
    @classmethod
    def _weights(cls, breeds: dict[str, float] | None) -> dict[str, float] | None:
        return None if breeds is None else check_weights(breeds)


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every 4xx/5xx answer: ``detail`` says what to fix (a list of issues for a malformed request)."""

    detail: str | list[ValidationIssue]


def problems(codes: dict[int, str]) -> dict[int | str, dict[str, object]]:
    """The error answers a route documents, each with the ``{"detail": ...}`` body."""
    return {code: {"model": Problem, "description": text} for code, text in codes.items()}


BUSY = "the model is not loaded yet, the service is busy (Retry-After says when to retry) or the request timed out"
INVALID = "invalid input: the detail says which field and why"
QUERY_ERRORS = problems({422: INVALID, 503: BUSY})
JSON_ERRORS = problems(
    {400: "a body that cannot be read as JSON", 413: "a request body over the size limit", 422: INVALID, 503: BUSY}
)
PHOTO_ERRORS = problems(
    {
        400: "an empty, truncated or corrupt upload",
        413: "an upload over the byte or pixel limit",
        415: "an upload that is not a JPEG, PNG or WebP",
        422: INVALID,
        503: BUSY,
    }
)
NOT_LOADED = problems({503: "the model is not loaded yet"})


class Health(BaseModel):
    status: str


class Info(BaseModel):
    breeds: list[BreedInfo]
    resolution: int
    latent_dim: int
    latent_prior: str = Field(description="what samples and mixes draw z from: diffusion or gaussian (model/prior.py)")
    sampling_steps: int | None = Field(
        description="DDIM steps per sample of a diffusion prior (VAE_DOGS_SAMPLING_STEPS)"
    )
    guidance: float | None = Field(description="classifier-free guidance scale of a diffusion prior (1: none)")
    guidance_rescale: float | None = Field(
        description="share by which a diffusion prior's guided prediction is scaled back to the conditional "
        "prediction's spread (0: plain guidance)"
    )
    output_scale: float | None = Field(
        description="a diffusion prior's sampled standardised latents are multiplied by this (1: as sampled; "
        "below 1: towards their mean)"
    )
    eta: float | None = Field(
        description="fresh noise per DDIM step of a diffusion prior (0: deterministic DDIM, 1: as much as DDPM)"
    )
    autoguidance: float | None = Field(
        description="weight of a diffusion prior's autoguidance guide, a weaker denoiser whose errors samples are "
        "pushed away from (1: unused; null: no guide; VAE_DOGS_AUTOGUIDANCE)"
    )
    mix_strength: float | None = Field(
        description="a diffusion prior's mix weights w are scaled by (1 / |w|_2) ** mix_strength before sampling, "
        "so that a mix conditions on each parent nearly as strongly as a pure breed (0: the weights as given)"
    )
    distilled: bool | None = Field(
        description="whether samples and mixes are drawn by the distilled few-step student instead of the guided "
        "sampler above, which it imitates (null: the checkpoint has no student; VAE_DOGS_DISTILLED)"
    )
    identifier: dict | None = Field(
        description="the breed identifier of photos: a linear head on the pretrained EfficientNet-Lite0 trunk "
        "(ImageNet), the side it reads photos at, its temperature and the dog-probability threshold (null: the "
        "VAE's own breed head identifies)"
    )
    device: str
    checkpoint: str = Field(description="the checkpoint folder's name (VAE_DOGS_CHECKPOINT)")
    checkpoint_sha256: str = Field(description="SHA-256 of model.safetensors")
    torch_version: str | None
    git_commit: str | None
    evaluation: dict | None = Field(description="metrics from python -m training.evaluate, if it was run")


class BreedWeight(BaseModel):
    breed: str
    weight: float = Field(ge=0, le=1)


class AncestryFit(BaseModel):
    """How well the mix explains the photo, in the space it was weighed in (``by``)."""

    score: float = Field(
        ge=0,
        le=1,
        description="how typical the photo is for a dog of this mix: the chance that a "
        "dog drawn from the mix lies at least as far from the mix's centre "
        "(about 0.5 for a typical dog of the mix, near 0 when the mix does not explain the photo)",
    )
    mahalanobis: float = Field(
        ge=0,
        description="the photo's distance from the mix's centre, in units of "
        "the mix's spread, per sqrt(dimension): about 1 for a typical dog of the mix",
    )
    log_density_mix: float = Field(description="log density of the photo under the mix's Gaussian")
    log_density_best_breed: float = Field(description="... and under the most likely single breed's")


class AncestryResult(BaseModel):
    composition: list[BreedWeight] = Field(description="largest first; weights sum to 1")
    by: Literal["identifier", "latent"] = Field(
        description="the space the mix was weighed in: the breed identifier's view of the photo, or the latent"
    )
    fit: AncestryFit
    dog_probability: float = Field(ge=0, le=1, description=DOG_PROBABILITY)
    looks_like_a_dog: bool = Field(description=LOOKS_LIKE_A_DOG.replace("breeds are", "composition is"))
    note: str | None = Field(None, description="what to make of the answer, when it needs saying")


class MorphEnd(BaseModel):
    """One end of a morph: exactly one of ``breeds`` and ``latent``."""

    # Exactly one end given: a null counts as not given.
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["breeds"], "properties": {"breeds": {"type": "object"}}},
                {"required": ["latent"], "properties": {"latent": {"type": "array"}}},
            ]
        },
    )

    breeds: dict[str, float] | None = Field(None, description="a breed mix (its dog drawn with the request's seed)")
    latent: list[float] | None = Field(None, description="or a latent z, e.g. the mean from POST /encode")

    @field_validator("breeds")
    @classmethod
    def _weights(cls, breeds: dict[str, float] | None) -> dict[str, float] | None:
        return None if breeds is None else check_weights(breeds)

    @field_validator("latent")
    @classmethod
    def _finite(cls, latent: list[float] | None) -> list[float] | None:
        if latent is not None and any(not math.isfinite(v) for v in latent):
            raise ValueError("the latent must be finite numbers (no NaN or infinity)")
        return latent

    @model_validator(mode="after")
    def _one_of(self) -> MorphEnd:
        if (self.breeds is None) == (self.latent is None):
            raise ValueError("give either 'breeds' or 'latent' for each end of the morph")
        return self


class MorphRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "start": {"breeds": {"beagle": 1}},
                    "end": {"breeds": {"samoyed": 0.5, "dingo": 0.5}},
                    "steps": 8,
                    "seed": 3,
                    "format": "png",
                }
            ]
        },
    )

    start: MorphEnd
    end: MorphEnd
    steps: Integer = Field(8, ge=2, description="images in the strip, both ends included")
    seed: Seed | None = Field(None, description="the pose noise shared by both breed ends")
    temperature: float = Field(1.0, ge=0, le=3)
    format: Literal["png", "gif"] = "png"
    scale: Integer = Field(1, ge=1)
