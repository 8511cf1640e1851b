import pytest
@pytest.fixture
def reactor():
    from twisted.internet import reactor
    return reactor
