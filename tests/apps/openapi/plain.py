"""Scalars only, so rawserve documents it without pydantic: query and path
constraints, defaults, lists, headers, forms and files, status codes."""

from typing import Annotated

from rawserve import FastAPI, File, Form, Header, Query, UploadFile

app = FastAPI(title="Plain", version="0.1.0")


@app.get("/add/{a}/{b}")
def add(a: int, b: float, round_to: Annotated[int, Query(ge=0, le=6)] = 2) -> dict[str, float]:
    return {"sum": round(a + b, round_to)}


@app.get("/echo")
async def echo(
    text: Annotated[str, Query(min_length=1, max_length=20, description="What to say")],
    times: int = 1,
    loud: bool = False,
    tags: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI's tutorial spelling
    x_token: Annotated[str | None, Header()] = None,
):
    return {"text": text}


@app.post("/login/", status_code=201)
async def login(username: Annotated[str, Form()], password: Annotated[str, Form()]):
    return {"username": username}


@app.post("/files/")
async def create_file(file: Annotated[bytes, File()], token: Annotated[str, Form()]):
    return {"file_size": len(file), "token": token}


@app.post("/uploadfile/", tags=["files"])
async def create_upload_file(file: UploadFile):
    return {"filename": file.filename}
