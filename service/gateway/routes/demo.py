"""The demo page at `/`: draw or upload a digit, see the class probabilities as bars."""

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

PAGE = resources.files("service.gateway").joinpath("static/demo.html").read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def demo_page() -> HTMLResponse:
    return HTMLResponse(PAGE)
