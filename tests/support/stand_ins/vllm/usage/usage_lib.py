import enum


class UsageContext(enum.Enum):
    LLM_CLASS = "LLM_CLASS"
