"""The serving model's state for the admin, the same one /healthz reports."""

from django import template

from recognizer.health import model_state

register = template.Library()


@register.simple_tag
def model_health() -> dict:
    return model_state()
