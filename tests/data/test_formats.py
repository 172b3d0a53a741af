import pytest

from tuneforge.data.formats import detect_format, normalise
from tuneforge.data.problems import RowError


@pytest.mark.parametrize(
    "row,fmt",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"instruction": "Say hi", "input": "", "output": "hi"}, "alpaca"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
        ({"prompt": "hi", "completion": "hello"}, "prompt_completion"),
    ],
)
def test_detect_each_format(row, fmt):
    assert detect_format([row, row]) == fmt


def test_detect_majority_and_unknown():
    rows = [{"prompt": "a", "completion": "b"}] * 3 + [{"messages": []}]
    assert detect_format(rows) == "prompt_completion"
    assert detect_format([{"body": "x"}, [1, 2]]) is None


def test_alpaca_input_joined_and_system_kept():
    row = normalise(
        {"instruction": "Translate", "input": "cat", "output": "chat", "system": "Be terse.", "id": 7}, "alpaca"
    )
    assert row["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Translate\n\ncat"},
        {"role": "assistant", "content": "chat"},
    ]
    assert row["id"] == 7  # fields the format does not use are kept


def test_sharegpt_roles_mapped():
    row = normalise(
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ]
        },
        "sharegpt",
    )
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]


def test_sharegpt_unknown_speaker_names_turn():
    with pytest.raises(RowError) as exc:
        normalise({"conversations": [{"from": "robot", "value": "Q"}]}, "sharegpt")
    assert exc.value.code == "unrecognized_role" and exc.value.field == "conversations[0].from"


def test_prompt_completion():
    row = normalise({"prompt": "2+2?", "completion": "4"}, "prompt_completion")
    assert row["messages"][1] == {"role": "assistant", "content": "4"}


@pytest.mark.parametrize(
    "row,code,field",
    [
        ([1, 2], "not_an_object", ""),
        ({"msgs": []}, "missing_messages", "messages"),
        ({"messages": []}, "empty_messages", "messages"),
        ({"messages": "hi"}, "wrong_type", "messages"),
        ({"messages": ["hi"]}, "message_not_object", "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "message_missing_key", "messages[0].role"),
        ({"messages": [{"role": "user", "content": "q", "mood": 1}]}, "message_unrecognized_key", "messages[0].mood"),
        ({"messages": [{"role": "wizard", "content": "q"}]}, "unrecognized_role", "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "missing_content", "messages[0].content"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty_content", "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]},
            "invalid_weight",
            "messages[1].weight",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, "no_assistant_message", "messages"),
        ({"instruction": "q"}, "missing_field", "output"),
        ({"instruction": 3, "output": "a"}, "wrong_type", "instruction"),
    ],
)
def test_problem_codes(row, code, field):
    fmt = "alpaca" if isinstance(row, dict) and "instruction" in row else "messages"
    with pytest.raises(RowError) as exc:
        normalise(row, fmt)
    assert (exc.value.code, exc.value.field) == (code, field)


def test_content_parts_flattened():
    row = normalise(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "yo"},
            ]
        },
        "messages",
    )
    assert row["messages"][0]["content"] == "hi"
