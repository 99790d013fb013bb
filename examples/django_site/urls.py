"""The example project's routes."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("count/<path:name>", views.count),
    path("health", views.health),
]
