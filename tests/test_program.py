from reward_designer.program import extract_code, fitness_aggregate

BODY = "def compute_reward(state, action):\n    r = state.qvel[:, 0]\n    return r, {'r': r}\n"


def test_single_fenced_block_with_prose():
    reply = f"Here is my reward.\n\n```python\n{BODY}```\n\nIt rewards speed."
    assert extract_code(reply) == BODY


def test_unlabelled_fence_and_several_blocks_picks_the_entry():
    reply = f"```\nprint('usage example')\n```\nand the program:\n```py\n{BODY}```"
    assert extract_code(reply) == BODY


def test_helper_block_used_by_the_entry_is_kept_in_front():
    helper = "def speed(state):\n    return state.qvel[:, 0]\n"
    main = "def compute_reward(state, action):\n    r = speed(state)\n    return r, {'r': r}\n"
    reply = f"```python\n{helper}```\nthen\n```python\n{main}```"
    code = extract_code(reply)
    assert code.index("def speed") < code.index("def compute_reward")


def test_the_blocks_a_kept_helper_needs_are_kept_too():
    consts = "import torch\nSCALE: float = 5.0\nLOW, HIGH = -1.0, 1.0\n"
    helper = "def upright(angle):\n    return torch.exp(-SCALE * angle.abs()).clamp(LOW, HIGH)\n"
    main = "def compute_reward(state, action):\n    r = upright(state.qpos[:, 1])\n    return r, {'r': r}\n"
    unused = "def plot(x):\n    return x\n"
    reply = f"```python\n{consts}```\n```python\n{unused}```\n```python\n{helper}```\n```python\n{main}```"
    assert extract_code(reply) == f"{consts}\n\n{helper}\n\n{main}"


def test_a_usage_example_block_is_left_out():
    main = ("def compute_reward(state, action):\n    reward = state.qvel[:, 0]\n"
            "    return reward, {'reward': reward}\n")
    example = "reward, components = compute_reward(state, action)\nprint(reward)\n"
    assert extract_code(f"```python\n{main}```\nUse it like this:\n```python\n{example}```") == main


def test_a_reply_cut_at_the_token_limit_is_not_parsed_once_per_line(monkeypatch):
    import reward_designer.program as program

    real, parses = program._parses, []
    monkeypatch.setattr(program, "_parses", lambda code: parses.append(1) or real(code))
    looping = "    w = torch.tensor([\n" + "        0.1, 0.2,\n" * 5000
    reply = f"Here it is:\n\nimport torch\n{BODY}\ndef compute_weights():\n{looping}"
    code = extract_code(reply)
    assert code.startswith("import torch") and "def compute_weights" not in code
    assert len(parses) <= 10  # cuts are tried only before unindented lines


def test_unused_helper_block_is_left_out():
    reply = f"```python\nimport os\nx = 1\n```\n```python\n{BODY}```"
    assert extract_code(reply) == BODY


def test_bare_code_amid_prose():
    reply = f"Sure! Below is the function.\n\nimport torch\n{BODY}\nHope this helps, good luck."
    code = extract_code(reply)
    assert code.startswith("import torch") and "Hope" not in code and "Sure" not in code


def test_no_entry_gives_none():
    assert extract_code("I cannot help with that.") is None
    assert extract_code("```python\ndef other(x):\n    return x\n```") is None


def test_broken_block_is_still_returned_for_the_critic():
    reply = "```python\ndef compute_reward(state, action):\n    return (\n```"
    assert "return (" in extract_code(reply)


def test_fitness_aggregate_is_read_statically():
    assert fitness_aggregate('AGGREGATE = "any"\ndef compute_fitness(s, a):\n    return 1\n') == "any"
    assert fitness_aggregate("def compute_fitness(s, a):\n    return 1\n") == "sum"
