"""Prompt-injection heuristics, on input only: phrases that try to override the system
prompt, chat-template tokens a client has no reason to send, and invisible characters
(counted during normalisation). Heuristics misfire, so their default action is ``flag``."""

from __future__ import annotations

import re

from llmrouter.gateway.guardrails.detectors import Detector

OVERRIDE = Detector(
    "injection_override",
    re.compile(
        r"(?i)\b(?:(?:ignore|disregard|forget|override|bypass)\s{1,3}(?:all\s{1,3}|any\s{1,3}"
        r"|the\s{1,3}|your\s{1,3}|of\s{1,3}|everything\s{1,3}){0,3}(?:previous|prior|above|earlier"
        r"|preceding|system|original|safety)\s{1,3}(?:instructions?|prompts?|rules|directions"
        r"|messages?|guidelines|context)"
        r"|you\s{1,3}are\s{1,3}now\s{1,3}(?:in\s{1,3})?(?:dan|developer\s{1,3}mode|jailbroken)"
        r"|(?:reveal|print|repeat|show)\s{1,3}(?:me\s{1,3})?(?:your|the)\s{1,3}(?:system|hidden"
        r"|initial)\s{1,3}(?:prompt|instructions))\b"
    ),
    max_length=120,
)

TEMPLATE = Detector(
    "injection_template",
    re.compile(
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id"
        r"|end_header_id|begin_of_text|end_of_text)\|>|\[/?INST\]|<</?SYS>>"
    ),
    max_length=20,
    literals=("<|", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"),
)

INVISIBLE = "injection_invisible"
"""Not a pattern: invisible characters removed by normalisation, counted per text."""
