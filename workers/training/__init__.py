"""Trainer backends behind one interface: the OpenAI fine-tuning API and local LoRA."""
