"""Procedural Pillow renderer for the offline image provider.

Three styles from the same inputs (emotions, intensity, a seed):
- abstract: soft colour fields and flowing ribbons; intensity drives density and energy;
- diagram: an emotion wheel of the whole vocabulary, the declared emotions extended by
  intensity, with labels and the intensity at the centre;
- metaphor: a landscape whose sky, light, terrain and weather embody the emotions.
Soft layers are drawn at quarter size, blurred there and scaled up: same look, ~10x
cheaper than blurring at full size.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from domain.visual_language import LOOKS
from domain.vocabulary import EMOTIONS, VisualizationStyle

RGB = tuple[int, int, int]


def _rgb(hex_colour: str) -> RGB:
    value = hex_colour.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _vertical_gradient(size: int, top: RGB, bottom: RGB) -> Image.Image:
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        column.putpixel((0, y), _mix(top, bottom, y / 255))
    return column.resize((size, size), Image.Resampling.BICUBIC)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _vignette(image: Image.Image, strength: float) -> Image.Image:
    size = image.size[0]
    small = 64
    mask = Image.new("L", (small, small))
    for y in range(small):
        for x in range(small):
            d = math.hypot(x - small / 2, y - small / 2) / (small / 2)
            mask.putpixel((x, y), int(255 * min(1.0, max(0.0, (d - 0.55) / 0.6)) * strength))
    mask = mask.resize((size, size), Image.Resampling.BICUBIC)
    dark = Image.new("RGB", image.size, (8, 8, 16))
    return Image.composite(dark, image, mask)


# --- abstract ---------------------------------------------------------------------


def _abstract(emotions: list[str], intensity: float, rng: random.Random, size: int) -> Image.Image:
    looks = [LOOKS[e] for e in emotions]
    base = _vertical_gradient(
        size, _rgb(looks[0].palette[0]), _mix(_rgb(looks[-1].palette[2]), (255, 255, 255), 0.2)
    )
    small = size // 4
    blobs = Image.new("RGBA", (small, small), (0, 0, 0, 0))
    draw = ImageDraw.Draw(blobs)
    count = 6 + int(intensity * 16)
    for i in range(count):
        look = looks[i % len(looks)]
        colour = _rgb(look.palette[rng.randrange(3)])
        radius = small * rng.uniform(0.08, 0.30 - 0.12 * intensity)
        cx, cy = rng.uniform(0, small), rng.uniform(0, small)
        alpha = int(110 + 120 * intensity * rng.random())
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, alpha))
    blobs = blobs.filter(ImageFilter.GaussianBlur(small * (0.05 - 0.025 * intensity)))
    image = base.convert("RGBA")
    image.alpha_composite(blobs.resize((size, size), Image.Resampling.BICUBIC))

    ribbons = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    rdraw = ImageDraw.Draw(ribbons)
    for i, look in enumerate(looks):
        for band in range(2 + int(intensity * 3)):
            amplitude = size * (0.04 + 0.12 * intensity) * rng.uniform(0.6, 1.2)
            wavelength = size * rng.uniform(0.35, 0.9) * (1.2 - 0.5 * intensity)
            phase = rng.uniform(0, math.tau)
            y0 = size * (0.2 + 0.6 * rng.random())
            colour = _rgb(look.palette[(band + i) % 3])
            points = [
                (x, y0 + amplitude * math.sin(phase + x / wavelength * math.tau))
                for x in range(-20, size + 21, 8)
            ]
            width = max(2, int(size * rng.uniform(0.004, 0.016)))
            rdraw.line(points, fill=(*colour, 150), width=width, joint="curve")
    image.alpha_composite(ribbons.filter(ImageFilter.GaussianBlur(1.2)))

    sparks = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    sdraw = ImageDraw.Draw(sparks)
    for _ in range(int(40 + 160 * intensity)):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        r = rng.uniform(1, 2.5 + 3 * intensity)
        sdraw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, rng.randrange(60, 200)))
    image.alpha_composite(sparks)
    return _vignette(image.convert("RGB"), 0.35 + 0.4 * intensity)


# --- diagram ----------------------------------------------------------------------


def _diagram(emotions: list[str], intensity: float, rng: random.Random, size: int) -> Image.Image:
    background = (246, 244, 240)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = size / 2, size * 0.56
    inner, ring = size * 0.09, size * 0.17
    slice_deg = 360 / len(EMOTIONS)
    weights = {e: intensity * (1.0 - 0.18 * i) for i, e in enumerate(emotions)}
    label_font = _font(max(11, size // 42))
    for index, emotion in enumerate(EMOTIONS):
        start = -90 + index * slice_deg
        look = LOOKS[emotion]
        if emotion in weights:
            outer = inner + ring * (0.45 + 0.9 * weights[emotion])
            fill = _rgb(look.palette[1])
        else:
            outer = inner + ring * 0.35
            fill = _mix(_rgb(look.palette[2]), background, 0.55)
        draw.pieslice(
            (cx - outer, cy - outer, cx + outer, cy + outer),
            start + 1.2,
            start + slice_deg - 1.2,
            fill=fill,
        )
        middle = math.radians(start + slice_deg / 2)
        label_r = inner + ring * 1.5
        lx, ly = cx + label_r * math.cos(middle), cy + label_r * math.sin(middle)
        colour = _rgb(look.palette[0]) if emotion in weights else (150, 150, 150)
        draw.text((lx, ly), emotion, fill=colour, font=label_font, anchor="mm")
    # Guide rings at 25 / 50 / 75 / 100 % of the intensity scale.
    for step in (0.25, 0.5, 0.75, 1.0):
        r = inner + ring * (0.45 + 0.9 * step)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(200, 196, 190), width=1)
    draw.ellipse(
        (cx - inner, cy - inner, cx + inner, cy + inner),
        fill=(255, 255, 255),
        outline=_rgb(LOOKS[emotions[0]].palette[0]),
        width=max(2, size // 200),
    )
    draw.text(
        (cx, cy - size * 0.015),
        f"{round(intensity * 100)}%",
        anchor="mm",
        fill=_rgb(LOOKS[emotions[0]].palette[0]),
        font=_font(size // 14),
    )
    draw.text(
        (cx, cy + size * 0.05),
        "intensity",
        anchor="mm",
        fill=(110, 110, 110),
        font=_font(max(10, size // 48)),
    )
    draw.text(
        (size / 2, size * 0.05),
        " + ".join(emotions),
        anchor="mm",
        fill=(40, 40, 48),
        font=_font(size // 22),
    )
    # Legend: the declared emotions as bars, longest first.
    bar_y = size * 0.10
    for emotion in emotions:
        width = size * 0.3 * weights[emotion] + 4
        draw.rounded_rectangle(
            (size * 0.35, bar_y, size * 0.35 + width, bar_y + size * 0.018),
            radius=4,
            fill=_rgb(LOOKS[emotion].palette[1]),
        )
        draw.text(
            (size * 0.33, bar_y + size * 0.009),
            emotion,
            anchor="rm",
            fill=(70, 70, 70),
            font=label_font,
        )
        bar_y += size * 0.028
    return image


# --- metaphor ---------------------------------------------------------------------


def _ridge(
    rng: random.Random, size: int, base: float, roughness: float
) -> list[tuple[float, float]]:
    waves = [(rng.uniform(1, 4), rng.uniform(0, math.tau), rng.uniform(0.3, 1.0)) for _ in range(4)]
    points = [(0.0, float(size))]
    for x in range(0, size + 1, 6):
        height = sum(a * math.sin(f * x / size * math.tau + p) for f, p, a in waves)
        jag = rng.uniform(-1, 1) * roughness
        points.append((float(x), base + size * 0.035 * height + size * 0.02 * jag))
    points.append((float(size), float(size)))
    return points


def _metaphor(emotions: list[str], intensity: float, rng: random.Random, size: int) -> Image.Image:
    main = LOOKS[emotions[0]]
    dark = emotions[0] in {"sadness", "fear", "anxiety", "disgust"}
    sky_top = _mix(_rgb(main.palette[0]), (10, 10, 30), 0.3 if dark else 0.0)
    image = _vertical_gradient(size, sky_top, _rgb(main.palette[2])).convert("RGBA")
    horizon = size * (0.58 - 0.08 * intensity)

    glow = Image.new("RGBA", (size // 4, size // 4), (0, 0, 0, 0))
    gdraw = ImageDraw.Draw(glow)
    sx, sy = size * rng.uniform(0.25, 0.75) / 4, horizon * rng.uniform(0.35, 0.6) / 4
    body = (255, 236, 170) if not dark else (225, 230, 245)
    for radius, alpha in ((size / 10, 60), (size / 16, 120), (size / 30, 255)):
        r = radius / 4 * (0.8 + 0.6 * intensity)
        gdraw.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(*body, alpha))
    image.alpha_composite(glow.filter(ImageFilter.GaussianBlur(3)).resize((size, size)))

    draw = ImageDraw.Draw(image)
    if "surprise" in emotions or "excitement" in emotions:
        for _ in range(int(3 + 6 * intensity)):
            fx, fy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.08, 0.4) * size
            colour = _rgb(LOOKS[rng.choice(emotions)].palette[rng.randrange(1, 3)])
            for k in range(18):
                angle = k / 18 * math.tau
                length = size * rng.uniform(0.03, 0.07) * (0.6 + intensity)
                draw.line(
                    (fx, fy, fx + length * math.cos(angle), fy + length * math.sin(angle)),
                    fill=(*colour, 200),
                    width=2,
                )

    layers = 3
    terrain = _rgb(main.palette[0])
    roughness = 2.5 if "anger" in emotions or "frustration" in emotions else 0.4
    for layer in range(layers):
        depth = layer / (layers - 1)
        colour = _mix(
            _mix(terrain, _rgb(main.palette[2]), 0.55 * (1 - depth)), (12, 12, 20), 0.35 * depth
        )
        base = horizon + size * 0.1 * layer
        draw.polygon(_ridge(rng, size, base, roughness * (1 + depth)), fill=(*colour, 255))

    if "contentment" in emotions or "joy" in emotions:
        lake_top = size * 0.86
        draw.rectangle(
            (0, lake_top, size, size), fill=(*_mix(_rgb(main.palette[2]), (40, 90, 140), 0.5), 255)
        )
        for _ in range(25):
            y = rng.uniform(lake_top + 4, size - 4)
            x = rng.uniform(0, size)
            draw.line(
                (x, y, x + size * rng.uniform(0.02, 0.08), y), fill=(255, 255, 255, 120), width=2
            )

    weather = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    wdraw = ImageDraw.Draw(weather)
    if "sadness" in emotions:
        for _ in range(int(150 + 450 * intensity)):
            x, y = rng.uniform(0, size), rng.uniform(0, size)
            wdraw.line((x, y, x - size * 0.01, y + size * 0.04), fill=(200, 215, 235, 110), width=1)
    if "anxiety" in emotions or "fear" in emotions:
        for _ in range(int(4 + 8 * intensity)):
            cx, cy = rng.uniform(0, size), rng.uniform(0, horizon * 0.7)
            for ring in range(6):
                r = size * 0.015 * (ring + 1) * (0.7 + intensity)
                wdraw.arc(
                    (cx - r, cy - r * 0.6, cx + r, cy + r * 0.6),
                    rng.uniform(0, 180),
                    rng.uniform(200, 340),
                    fill=(230, 225, 245, 90),
                    width=2,
                )
    if "anger" in emotions:
        x, y = rng.uniform(0.2, 0.8) * size, 0.0
        bolt = [(x, y)]
        while y < horizon:
            x += rng.uniform(-1, 1) * size * 0.05
            y += size * rng.uniform(0.03, 0.08)
            bolt.append((x, y))
        wdraw.line(bolt, fill=(255, 240, 200, 230), width=max(2, size // 180))
    if "disgust" in emotions:
        wdraw.rectangle((0, horizon - size * 0.1, size, size), fill=(120, 150, 40, 60))
    if "frustration" in emotions:
        for _ in range(int(3 + 5 * intensity)):
            y = rng.uniform(horizon, size * 0.95)
            points = [
                (x, y + (size * 0.015 if (x // 24) % 2 else -size * 0.015))
                for x in range(0, size + 24, 24)
            ]
            wdraw.line(points, fill=(60, 20, 20, 140), width=2)
    image.alpha_composite(weather.filter(ImageFilter.GaussianBlur(0.6)))
    if "fear" in emotions or dark:
        fog = Image.new("RGBA", (size, size), (220, 220, 235, int(30 + 50 * intensity)))
        image.alpha_composite(fog)
    return _vignette(image.convert("RGB"), 0.3 + 0.35 * intensity)


_STYLES = {
    VisualizationStyle.ABSTRACT: _abstract,
    VisualizationStyle.DIAGRAM: _diagram,
    VisualizationStyle.METAPHOR: _metaphor,
}


def render(
    style: VisualizationStyle, emotions: list[str], intensity: float, seed: int, size: int
) -> Image.Image:
    rng = random.Random(seed)
    intensity = min(1.0, max(0.0, intensity))
    return _STYLES[style](emotions, intensity, rng, size)
