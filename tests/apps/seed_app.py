"""The seed article's FastAPI example. Only the imports changed: ``fastapi``
became ``rawserve``; every other line is as a FastAPI user wrote it."""

# ruff: noqa: B008 - FastAPI's File(...) default is the idiom being ported

import asyncio

from rawserve import FastAPI, File, UploadFile
from rawserve.responses import StreamingResponse

app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile = File(...)):
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "prediction": sum(data) % 10}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(10):
            yield f"chunk {i}\n"
            await asyncio.sleep(0.01)

    return StreamingResponse(gen(), media_type="text/plain")
