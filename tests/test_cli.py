"""cli.py: the shared command-line plumbing."""
import pytest

from cli import UserError, read_json_object


def test_a_json_file_that_is_not_text_is_a_user_error(tmp_path):
    path = tmp_path / "ann_results.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UserError, match="ann_results.json: cannot read"):
        read_json_object(path)
