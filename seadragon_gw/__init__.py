"""seadragon_gw: a self-hosted LLM gateway in front of Ollama and OpenAI-compatible servers."""

__version__ = "0.1.0"
