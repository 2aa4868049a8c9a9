"""Path, query, header, cookie and body parameters, models, tags, status
codes, summaries and docstrings, a router, a hidden route (FastAPI's tutorial)."""

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, Field

from rawserve import APIRouter, Body, Cookie, FastAPI, Header, Path, Query, status


class ModelName(str, Enum):  # noqa: UP042 - the tutorial's spelling
    alexnet = "alexnet"
    resnet = "resnet"
    lenet = "lenet"


class Image(BaseModel):
    url: str
    name: str


class Item(BaseModel):
    name: str
    description: str | None = Field(
        default=None, title="The description of the item", max_length=300
    )
    price: float = Field(gt=0, description="The price must be greater than zero")
    tax: float | None = None
    tags: list[str] = []
    image: Image | None = None


class ItemOut(BaseModel):
    name: str
    price: float


class User(BaseModel):
    username: str
    full_name: str | None = None


app = FastAPI(title="Tutorial", version="1.2.3", description="Items, models and users.")


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "Hello World"}


@app.get("/items/{item_id}", tags=["items"])
async def read_item(
    item_id: Annotated[int, Path(title="The ID of the item to get", ge=1, le=1000)],
    q: Annotated[str | None, Query(min_length=3, max_length=50, pattern="^fixedquery$")] = None,
    short: bool = False,
    size: Annotated[float, Query(gt=0, lt=10.5)] = 1.0,
):
    return {"item_id": item_id, "q": q, "short": short, "size": size}


@app.get("/models/{model_name}")
async def get_model(model_name: ModelName):
    """Look a model up by name.

    The name is one of the three the tutorial knows.
    """
    return {"model_name": model_name}


@app.post(
    "/items/",
    response_model=ItemOut,
    status_code=status.HTTP_201_CREATED,
    tags=["items"],
    summary="Create an item",
)
async def create_item(item: Item):
    """Create an item with all the information."""
    return item


@app.put("/items/{item_id}", tags=["items"], description="Replace an item.")
async def update_item(
    item_id: int,
    item: Item,
    user: User,
    importance: Annotated[int, Body(gt=0)],
    user_agent: Annotated[str | None, Header()] = None,
    ads_id: Annotated[str | None, Cookie()] = None,
):
    return {"item_id": item_id}


@app.delete("/items/{item_id}", status_code=204, tags=["items"])
async def delete_item(item_id: int) -> None:
    return None


@app.get("/search/", deprecated=True)
async def search(
    q: Annotated[list[str] | None, Query(description="Terms to look for")] = None,
    limit: int = 10,
):
    return {"q": q}


@app.get("/hidden", include_in_schema=False)
async def hidden():
    return {}


router = APIRouter(prefix="/users", tags=["users"])


@router.get("/{username}", response_model=User)
async def read_user(username: str):
    return {"username": username}


@router.post("/", response_model=list[User])
async def create_users(users: list[User]):
    return users


app.include_router(router)
