"""VLM captions: a vision-language model (transformers, `hf`) or an OpenAI-compatible server (`openai`)
describes frames sampled per window of each clip."""
