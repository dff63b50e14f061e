"""POST /ancestry (which mix of breeds is this dog?) and POST /transfer (this dog as another breed)."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import Response

from app.api.routes.codec import dog_check, photo_tensor
from app.api.routes.generate import check_limits
from app.deps import ModelDep, PhotoDep, SettingsDep
from app.images import png_image, png_response
from app.schemas import IMAGE_PNG, PHOTO_ERRORS, AncestryFit, AncestryResult, BreedWeight, check_weights
from model import latent_ops

router = APIRouter(tags=["breeds"])

ANCESTRY_RESPONSES = {
    200: {
        "content": {"application/json": {}, "image/png": {}},
        "description": "the composition (JSON), or with image=true a dog of that mix (PNG)",
    }
}


@router.post(
    "/ancestry",
    response_model=AncestryResult,
    responses=ANCESTRY_RESPONSES | PHOTO_ERRORS,
    summary="The mix of known breeds that best explains a dog photo, like a DNA breed test",
)
async def ancestry(
    photo: PhotoDep,
    service: ModelDep,
    settings: SettingsDep,
    request: Request,
    max_breeds: int = Query(3, ge=1, le=10, description="at most this many breeds in the composition"),
    by: Literal["identifier", "latent"] | None = Query(
        None,
        description="identifier (the default where the checkpoint has it): the mix whose real photos, as the "
        "breed identifier sees them, are most like this one; latent: the mix under whose prior the photo's latent "
        "is likeliest, i.e. whose generated dogs look most like it to the model",
    ),
    image: bool = Query(False, description="return a dog of the mix (PNG, seed 0) instead of JSON"),
    scale: int = Query(1, ge=1),
) -> AncestryResult | Response:
    check_limits(settings, 1, scale, service.image_size)

    def work() -> tuple[latent_ops.Ancestry, bytes | None]:
        x = photo_tensor(photo, service, settings)
        result = latent_ops.ancestry(service.model, x, max_breeds, sampling=service.sampling, by=by)
        return result, png_image(result.mix_image[None], scale) if image else None

    result, data = await service.run(work, "ancestry", 1, request)
    composition = sorted(
        (
            BreedWeight(breed=service.breeds[i], weight=float(result.weights[i]))
            for i in result.weights.nonzero().flatten().tolist()
        ),
        key=lambda b: -b.weight,
    )
    if data is not None:
        header = ", ".join(f"{b.breed}={b.weight:.3f}" for b in composition)
        return png_response(
            data,
            headers={
                "X-Composition": header,
                "X-Ancestry-By": result.by,
                "X-Looks-Like-A-Dog": str(result.looks_like_a_dog).lower(),
            },
        )
    return AncestryResult(
        composition=composition,
        by=result.by,
        fit=AncestryFit(
            score=result.fit,
            mahalanobis=result.mahalanobis,
            log_density_mix=result.log_density_mix,
            log_density_best_breed=result.log_density_best_breed,
        ),
        **dog_check(result.dog_probability, result.looks_like_a_dog),
    )


MAX_BREEDS_FIELD = 10_000  # characters: far more than every breed with a weight needs


def parse_breeds_field(text: str) -> dict[str, float]:
    if len(text) > MAX_BREEDS_FIELD:
        raise HTTPException(422, detail=f"'breeds' is longer than {MAX_BREEDS_FIELD:,} characters")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, an integer of too many digits, deep nesting
        raise HTTPException(
            422, detail=f"'breeds' must be a JSON object of weights, e.g. {{\"samoyed\": 1}} ({type(err).__name__})"
        ) from err
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ):
        raise HTTPException(422, detail="'breeds' must be a JSON object of breed name -> number, e.g. {\"samoyed\": 1}")
    try:
        return check_weights({str(k): float(v) for k, v in value.items()})
    except OverflowError:  # an integer beyond any float
        raise HTTPException(
            422, detail="a weight in 'breeds' is too large; weights are normalised, so 1 will do"
        ) from None
    except ValueError as err:
        raise HTTPException(422, detail=str(err)) from err


@router.post(
    "/transfer",
    response_class=Response,
    responses=IMAGE_PNG | PHOTO_ERRORS,
    summary="The same dog (pose, background, framing) rendered as another breed or mix",
)
async def transfer(
    photo: PhotoDep,
    service: ModelDep,
    settings: SettingsDep,
    request: Request,
    breeds: str = Form(description='target breed weights as JSON, e.g. {"samoyed": 1}', examples=['{"samoyed": 1}']),
    scale: int = Query(1, ge=1, description="nearest-neighbour upscale, in the query as on every image endpoint"),
    strength: float = Query(
        latent_ops.TRANSFER_STRENGTH,
        ge=0,
        le=1,
        description="how much of the photo is redrawn as the new breed: 0 keeps its latent as it is (only the "
        "decoder's breed changes), 1 keeps nothing of the photo; in between the pose and framing stay",
    ),
    scale_in_form: str | None = Form(None, alias="scale", include_in_schema=False),
) -> Response:
    if scale_in_form is not None:  # where it was once read: say so rather than ignore it
        raise HTTPException(422, detail="scale is a query parameter: POST /transfer?scale=2, not a form field")
    check_limits(settings, 1, scale, service.image_size)
    weights = service.weights(parse_breeds_field(breeds))

    def work() -> bytes:
        images = latent_ops.transfer(service.model, photo_tensor(photo, service, settings), weights, strength)
        return png_image(images, scale)

    return png_response(await service.run(work, "transfer", 1, request))
