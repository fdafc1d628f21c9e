"""The OpenAI-compatible wire format: validated request models and the response shapes.

Requests are pydantic models that forbid unknown fields, so a misspelt parameter is a 400
that names it, never silently ignored. Parameters that OpenAI defines but eventkernel does
not implement yet (logprobs, echo, penalties, ...) are accepted by the schema only so that
:meth:`unsupported` can reject them with a message that says so.
"""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

# The completion's default when max_tokens is not given (OpenAI's).
DEFAULT_COMPLETION_TOKENS = 16


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: StrictBool = False


class _SamplingRequest(BaseModel):
    """Fields every generation request shares."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                                   # extension: 0 keeps every token
    n: int = 1
    stop: StrictStr | list[StrictStr] | None = None
    seed: int | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    ignore_eos: StrictBool = False                   # extension
    user: StrictStr | None = None                    # accepted, unused
    # Not implemented yet: rejected by unsupported() when set.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(parameter, why) for the first parameter set that eventkernel cannot honour."""
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed with stream: true"
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                return name, f"{name} is not supported yet: leave it out or set it to 0"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported yet: leave it out"
        return None

    @property
    def stop_strings(self) -> tuple[str, ...] | None:
        if self.stop is None:
            return None
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return stop or None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions. ``prompt``: a text, a list of texts, a list of token ids or a
    list of lists of token ids (several prompts: choices ``i * n`` to ``i * n + n - 1``)."""

    prompt: Union[StrictStr, list[StrictStr], list[int], list[list[int]]]
    echo: StrictBool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: StrictStr | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported yet: leave it out or set it to false"
        if self.logprobs is not None:
            return "logprobs", "logprobs are not supported yet: leave them out"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of is not supported yet: leave it out (or equal to n)"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported: leave it out"
        return super().unsupported()

    def prompts(self) -> list[str | list[int]]:
        """The prompts as texts or token-id lists."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        return list(prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: StrictStr
    content: StrictStr | list[TextPart]
    name: StrictStr | None = None

    def as_template_message(self) -> dict[str, str]:
        """{"role", "content"} for the chat template (text parts joined)."""
        content = self.content
        if not isinstance(content, str):
            content = "".join(part.text for part in content)
        return {"role": self.role, "content": content}


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: StrictBool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.logprobs:
            return "logprobs", "logprobs are not supported yet: leave them out or set false"
        if self.top_logprobs is not None:
            return "top_logprobs", "top_logprobs are not supported yet: leave them out"
        if self.tools:
            return "tools", "tool calls are not supported yet: leave tools out"
        if self.tool_choice not in (None, "none"):
            return "tool_choice", "tool calls are not supported yet: leave tool_choice out"
        if self.response_format and self.response_format.get("type") != "text":
            return "response_format", "only response_format {'type': 'text'} is supported"
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            return "max_completion_tokens", "max_tokens and max_completion_tokens differ"
        return super().unsupported()

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_tokens is None else self.max_tokens


# Non-streamed responses (the server writes stream chunks as plain dicts).

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "eventkernel"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def describe_validation_error(errors: list[dict]) -> tuple[str, str | None]:
    """One sentence for pydantic's first error, and the parameter it is about."""
    if not errors:
        return "the request is not valid", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    # NOTE: a union's error location ends with the member type tried ("str", "list[int]").
    loc = [part for part in loc if not any(c in part for c in "[]") and part not in (
        "str", "int", "float", "bool", "function-after")] or loc
    param = loc[0] if loc else None
    where = ".".join(loc)
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {first.get('msg')}", None
    if first.get("type") == "extra_forbidden":
        return f"unknown parameter {where!r}: this server does not know it", param
    if first.get("type") == "missing":
        return f"{where} is required", param
    if not where:
        return f"the body must be a JSON object ({first.get('msg')})", None
    return f"{where}: {first.get('msg')} (got {first.get('input')!r})", param
