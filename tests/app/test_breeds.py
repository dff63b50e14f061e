from fastapi.testclient import TestClient


def test_breeds_lists_names_and_photo_counts(client: TestClient) -> None:
    breeds = client.get("/breeds").json()["breeds"]
    assert breeds == [
        {"name": "beagle", "photos": 16},
        {"name": "gordon_setter", "photos": 16},
        {"name": "samoyed", "photos": 16},
    ]
