import pytest
from aixiate_api import migrations


@pytest.fixture(scope="session")
def database_schema(database_url: str) -> str:
    """The service's tests run on the migrated schema, exactly as deployed."""
    migrations.upgrade_url(database_url)
    return database_url
