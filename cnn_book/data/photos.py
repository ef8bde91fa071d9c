"""Photos that need no download, for the pretrained networks: public domain or CC0, shipped inside
installed packages (matplotlib's sample data and scikit-image's ``skimage.data``)."""

from __future__ import annotations

from collections.abc import Sequence


def sample_photo():
    """A colour photo that needs no download: Grace Hopper, from matplotlib's sample data (PIL image)."""
    from matplotlib import cbook
    from PIL import Image

    return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


PHOTOS = {  # name -> (what it shows, where it comes from and its licence)
    "grace_hopper": ("Grace Hopper", "matplotlib's sample data; U.S. Navy photograph, public domain"),
    "chelsea": ("Chelsea the cat", "skimage.data.chelsea; Stefan van der Walt, CC0"),
    "coffee": ("a cup of coffee", "skimage.data.coffee; Rachel Michetti, Pikolo Espresso Bar, CC0"),
    "astronaut": ("the astronaut Eileen Collins", "skimage.data.astronaut; NASA, public domain"),
    "rocket": ("DSCOVR's launch on a Falcon 9", "skimage.data.rocket; SpaceX, public domain"),
}


def sample_photos(names: Sequence[str] | None = None) -> dict:
    """Colour photos that need no download, by name (PIL images, RGB); ``PHOTOS`` says what each shows
    and where it comes from. ``names`` picks some of them, in that order."""
    from PIL import Image

    names = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise ValueError(f"no sample photo called {unknown[0]!r}; the photos are {', '.join(PHOTOS)}")
    photos = {}
    for name in names:
        if name == "grace_hopper":
            photos[name] = sample_photo()
            continue
        try:
            import skimage.data
        except ImportError:
            raise ImportError(f"the photo {name!r} comes with scikit-image: pip install scikit-image") from None
        photos[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return photos
