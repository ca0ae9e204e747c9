"""How each emotion looks and reads: palettes, motifs, metaphors (pure data).

Shared by the offline analysis (which words it) and the offline renderer (which
draws it), so a picture and its description always agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmotionLook:
    palette: tuple[str, str, str]  # deep, main, light
    motifs: tuple[str, str]
    metaphor: str
    reading: str  # one clause for summaries: "<emotion> ..."


LOOKS: dict[str, EmotionLook] = {
    "joy": EmotionLook(
        ("#F28C28", "#FFC93C", "#FFF1B5"),
        ("sunburst", "rising sparks"),
        "sunlight breaking through clouds",
        "joy lifted the moment",
    ),
    "sadness": EmotionLook(
        ("#1F3A5F", "#4A6FA5", "#A9C1E0"),
        ("falling rain", "still water"),
        "a rain-soaked harbour at dusk",
        "sadness weighed on it",
    ),
    "anger": EmotionLook(
        ("#7A0C0C", "#D7263D", "#F79D84"),
        ("jagged peaks", "embers"),
        "a volcano venting heat",
        "anger pushed back hard",
    ),
    "fear": EmotionLook(
        ("#1B1B2F", "#3F3D56", "#8E8CA8"),
        ("long shadows", "narrow path"),
        "a dark forest path with one lantern",
        "fear kept you on guard",
    ),
    "disgust": EmotionLook(
        ("#33401A", "#6B8E23", "#C5D86D"),
        ("murky pools", "withered stems"),
        "a stagnant swamp under haze",
        "disgust made you recoil",
    ),
    "surprise": EmotionLook(
        ("#5B2A86", "#B57EDC", "#F3E8FF"),
        ("bursting stars", "open doors"),
        "a sky lit by sudden fireworks",
        "surprise caught you off guard",
    ),
    "anxiety": EmotionLook(
        ("#2E294E", "#7D5BA6", "#D4C2FC"),
        ("tangled threads", "spirals"),
        "a storm gathering over the sea",
        "anxiety kept your mind racing",
    ),
    "contentment": EmotionLook(
        ("#2D6A4F", "#74C69D", "#D8F3DC"),
        ("calm lake", "rolling hills"),
        "a quiet lake at golden hour",
        "contentment settled in",
    ),
    "frustration": EmotionLook(
        ("#8C2F39", "#E26D5C", "#F6C6A8"),
        ("knotted lines", "walls"),
        "a maze with a closed gate",
        "frustration built up",
    ),
    "excitement": EmotionLook(
        ("#D00070", "#FF5DA2", "#FFD6E8"),
        ("fireworks", "upward arrows"),
        "a launch pad just before lift-off",
        "excitement buzzed through it",
    ),
}


def intensity_word(intensity: float) -> str:
    if intensity >= 0.8:
        return "very strong"
    if intensity >= 0.6:
        return "strong"
    if intensity >= 0.4:
        return "moderate"
    if intensity >= 0.2:
        return "mild"
    return "faint"
