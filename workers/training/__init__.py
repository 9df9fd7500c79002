"""Trainer backends behind one interface: the OpenAI fine-tuning API and local LoRA."""

from __future__ import annotations

from openai import OpenAI
from redis import Redis

from core.settings import Settings, TrainerBackend
from workers.training.base import Trainer


def make_trainer(settings: Settings, redis: Redis, llm: OpenAI | None) -> Trainer:
    """The configured backend (``training.backend``).

    ``llm`` is the process's OpenAI client: the OpenAI backend trains through it, the
    local backend uses it to load adapters into the vLLM server it points at. The local
    backend is imported only when chosen, so OpenAI-only installs never load it.
    """
    if settings.training.backend is TrainerBackend.LOCAL:
        from workers.training.local import LocalTrainer

        return LocalTrainer(settings, redis, serving_client=llm)
    from workers.training.openai_backend import OpenAITrainer

    if llm is None:
        raise ValueError("the openai trainer needs an OpenAI client")
    return OpenAITrainer(llm, seed=settings.training.seed, training=settings.training)
