"""Fuzz the CSV reader: raw bytes, half of them behind a header it accepts, so that the rows
themselves are read and not only the header refused: python fuzz/ingest_csv.py -runs=N"""

from harness import fuzz

HEADER = b"exchange_id,timestamp,account_id,prompt,client_ip,input_tokens\n"


def to_file(data: bytes) -> bytes:
    return HEADER + data[1:] if data[:1] and data[0] % 2 else data


if __name__ == "__main__":
    fuzz(".csv", to_file)
