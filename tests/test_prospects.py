"""Prospects: `prospects import FILE.csv` normalises numbers to E.164, reports bad rows by line,
and an imported number names its caller on the call's log row."""

from __future__ import annotations

import pytest

from telnyx_flask.phone_numbers import to_e164

from .helpers import abandoned_call_events


def other_digits(number: str, zero: int) -> str:
    """The number in another script's digits: zero=0x0660 Arabic-Indic, 0xFF10 full-width."""
    return "".join(chr(zero + int(d)) for d in number)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("(312) 555-0147", "+13125550147"),
        ("312.555.0147", "+13125550147"),
        ("3125550147", "+13125550147"),
        ("13125550147", "+13125550147"),
        ("1 (312) 555-0147", "+13125550147"),
        ("+1 312-555-0147", "+13125550147"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("  +49 30 901820  ", "+4930901820"),
    ],
)
def test_to_e164_normalises(raw, e164):
    assert to_e164(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "555-0147",  # no area code
        "44 20 7946 0958",  # a country code needs + or 00 in front
        "020 7946 0958",  # a national number from outside North America
        "23125550147",  # eleven digits not starting with 1
        "+0123456789",  # no country code starts with 0
        "+1234567890123456",  # sixteen digits: longer than E.164 allows
        "+12345",
        "00",
        "call me",
    ],
)
def test_to_e164_refuses_what_it_cannot_read(raw):
    with pytest.raises(ValueError):
        to_e164(raw)


def test_to_e164_refuses_digits_that_are_not_ascii():
    # Arabic-Indic and full-width digits pass the \d checks but fail the table's [0-9] CHECK.
    for raw in (other_digits("3125550147", 0x0660), other_digits("3125550147", 0xFF10)):
        with pytest.raises(ValueError):
            to_e164(raw)


def write_csv(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "prospects.csv"
    path.write_text(text, encoding=encoding)
    return path


def import_csv(runner, path):
    return runner.invoke(args=["prospects", "import", str(path)])


def prospects(db_rows) -> list[tuple[str, str]]:
    rows = db_rows("SELECT name, phone_number FROM prospects ORDER BY phone_number, name")
    return [(row["name"], row["phone_number"]) for row in rows]


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(runner, db_rows, tmp_path):
    path = write_csv(
        tmp_path,
        "name,phone\n"
        "Ada Lovelace,(312) 555-0147\n"
        "Isambard Brunel,+44 20 7946 0958\n"
        "Marie Curie,0044 20 7946 0958\n"
        "Charles Darwin,13125550147\n"
        "No Number,\n"
        ",+12025550100\n"
        "Michael Faraday,555-0147\n"
        "Just A Name\n"
        "\n"
        "Jane Goodall, +1 202 555 0111 \n",
    )
    result = import_csv(runner, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported 5 prospects, skipped 4 bad rows"
    problems = result.stderr.splitlines()
    assert [line.split(":")[0] for line in problems] == ["line 6", "line 7", "line 8", "line 9"]
    assert problems[1] == "line 7: name is empty"
    assert "'555-0147'" in problems[2]
    assert problems[3] == "line 9: expected two columns: name, phone"
    assert prospects(db_rows) == [
        ("Jane Goodall", "+12025550111"),
        ("Ada Lovelace", "+13125550147"),
        ("Charles Darwin", "+13125550147"),
        ("Isambard Brunel", "+442079460958"),
        ("Marie Curie", "+442079460958"),
    ]


def test_the_header_row_is_optional(runner, db_rows, tmp_path):
    path = write_csv(tmp_path, "Ada Lovelace,(312) 555-0147\nMarie Curie,+33 1 42 68 53 00\n")
    result = import_csv(runner, path)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "imported 2 prospects, skipped 0 bad rows"
    assert prospects(db_rows) == [
        ("Ada Lovelace", "+13125550147"),
        ("Marie Curie", "+33142685300"),
    ]


def test_a_spreadsheet_export_with_a_byte_order_mark_reads_the_same(runner, db_rows, tmp_path):
    path = write_csv(tmp_path, "Name,Phone\r\nAda Lovelace,(312) 555-0147\r\n", "utf-8-sig")
    result = import_csv(runner, path)
    assert result.output.strip() == "imported 1 prospects, skipped 0 bad rows"
    assert prospects(db_rows) == [("Ada Lovelace", "+13125550147")]


def test_a_file_of_only_bad_rows_imports_nothing(runner, db_rows, tmp_path):
    path = write_csv(tmp_path, "name,phone\nNobody,12345\n")
    result = import_csv(runner, path)
    assert result.exit_code == 0
    assert result.stdout.strip() == "imported 0 prospects, skipped 1 bad rows"
    assert result.stderr.startswith("line 2: ")
    assert prospects(db_rows) == []


def test_a_missing_file_is_a_usage_error(runner, tmp_path):
    result = import_csv(runner, tmp_path / "nowhere.csv")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_line_numbers_count_file_lines_past_a_quoted_line_break(runner, tmp_path):
    path = write_csv(tmp_path, 'name,phone\n"Ada\nLovelace",(312) 555-0147\nNobody,12345\n')
    result = import_csv(runner, path)
    assert result.stderr.startswith("line 4: ")


def test_a_number_in_non_ascii_digits_is_a_bad_row_not_a_crash(runner, db_rows, tmp_path):
    full_width = other_digits("3125550199", 0xFF10)
    path = write_csv(tmp_path, f"Ada Lovelace,(312) 555-0147\nFull Width,{full_width}\n")
    result = import_csv(runner, path)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("line 2: ")
    assert prospects(db_rows) == [("Ada Lovelace", "+13125550147")]


def test_an_imported_number_names_its_caller(runner, db_rows, tmp_path, post_webhook):
    path = write_csv(tmp_path, "name,phone\nAcme Buyer,(202) 555-0188\n")
    assert import_csv(runner, path).exit_code == 0
    prospect_id = db_rows("SELECT id::text FROM prospects")[0]["id"]
    initiated, hangup = abandoned_call_events()
    assert initiated["data"]["payload"]["from"] == "+12025550188"
    assert post_webhook(initiated).status_code == 200
    assert post_webhook(hangup).status_code == 200
    assert db_rows(
        "SELECT prospect_id::text, prospect_name, phone_number, outcome FROM call_logs"
    ) == [
        {
            "prospect_id": prospect_id,
            "prospect_name": "Acme Buyer",
            "phone_number": "+12025550188",
            "outcome": "abandoned",
        }
    ]


def test_a_caller_who_is_not_a_prospect_has_no_name(runner, db_rows, tmp_path, post_webhook):
    path = write_csv(tmp_path, "Someone Else,(312) 555-0147\n")
    assert import_csv(runner, path).exit_code == 0
    for body in abandoned_call_events():
        assert post_webhook(body).status_code == 200
    assert db_rows("SELECT prospect_id, prospect_name FROM call_logs") == [
        {"prospect_id": None, "prospect_name": None}
    ]


def test_company_and_notes_columns_are_imported_when_given(runner, db_rows, tmp_path):
    path = write_csv(
        tmp_path,
        "name,phone,company,notes\n"
        'Ada Lovelace,(312) 555-0147,Analytical Engines Ltd,"Wants a demo.\nCall after 2 pm."\n'
        "Marie Curie,+33 1 42 68 53 00,  Radium Institute  ,\n"
        "Charles Darwin,13125550148\n",
    )
    result = import_csv(runner, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported 3 prospects, skipped 0 bad rows"
    assert db_rows("SELECT name, company, notes FROM prospects ORDER BY name") == [
        {
            "name": "Ada Lovelace",
            "company": "Analytical Engines Ltd",
            "notes": "Wants a demo.\nCall after 2 pm.",
        },
        {"name": "Charles Darwin", "company": None, "notes": None},
        {"name": "Marie Curie", "company": "Radium Institute", "notes": None},
    ]


def test_too_long_company_or_notes_and_extra_columns_are_bad_rows_named_by_line(
    runner, db_rows, tmp_path
):
    path = write_csv(
        tmp_path,
        "name,phone,company,notes\n"
        f"Long Company,(312) 555-0147,{'C' * 201},\n"
        f"Long Notes,(312) 555-0148,Acme,{'n' * 2001}\n"
        "Too Many,(312) 555-0149,Acme,notes,surprise\n"
        "Nul Byte,(312) 555-0150,Ac\x00me,\n"
        f"Just Right,(312) 555-0151,{'C' * 200},{'n' * 2000}\n",
    )
    result = import_csv(runner, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported 1 prospects, skipped 4 bad rows"
    assert result.stderr.splitlines() == [
        "line 2: company is 201 characters long; the limit is 200",
        "line 3: notes is 2001 characters long; the limit is 2000",
        "line 4: expected at most 4 columns: name, phone, company, notes",
        "line 5: contains a NUL character",
    ]
    assert prospects(db_rows) == [("Just Right", "+13125550151")]
