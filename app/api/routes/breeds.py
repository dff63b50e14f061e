from __future__ import annotations

from fastapi import APIRouter

from app.deps import ModelDep
from app.schemas import NOT_LOADED, BreedInfo, BreedList

router = APIRouter(tags=["breeds"])


@router.get(
    "/breeds",
    response_model=BreedList,
    responses=NOT_LOADED,
    summary="The breeds the model knows, with training photo counts",
)
def breeds(service: ModelDep) -> BreedList:
    return BreedList(breeds=[BreedInfo(**b) for b in service.card["breeds"]])
