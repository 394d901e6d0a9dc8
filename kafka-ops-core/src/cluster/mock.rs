//! The cluster-query mocks as one cluster, for unit tests of code that takes a
//! [`ClusterQuery`](super::ClusterQuery).

use async_trait::async_trait;

use super::{
    ClusterMetadata, GroupDescription, GroupListing, GroupOffsetMap, GroupQuery, MetadataQuery,
    MockGroupQuery, MockMetadataQuery, MockOffsetQuery, OffsetQuery, PartitionResults,
};
use crate::error::Error;
use crate::types::{
    IsolationLevel, ListedOffset, Offset, OffsetSpec, Timestamp, TopicPartition, Watermarks,
};

/// One cluster made of the three query traits' mocks: set expectations on each field.
#[derive(Default)]
pub struct MockClusterQuery {
    /// Answers [`MetadataQuery`].
    pub metadata: MockMetadataQuery,
    /// Answers [`OffsetQuery`].
    pub offsets: MockOffsetQuery,
    /// Answers [`GroupQuery`].
    pub groups: MockGroupQuery,
}

impl std::fmt::Debug for MockClusterQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockClusterQuery")
    }
}

#[async_trait]
impl MetadataQuery for MockClusterQuery {
    async fn metadata(&self, topics: &[String]) -> Result<ClusterMetadata, Error> {
        self.metadata.metadata(topics).await
    }
}

#[async_trait]
impl OffsetQuery for MockClusterQuery {
    async fn watermarks(
        &self,
        partitions: &[TopicPartition],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<Watermarks>, Error> {
        self.offsets.watermarks(partitions, isolation).await
    }
    async fn list_offsets(
        &self,
        queries: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Result<PartitionResults<ListedOffset>, Error> {
        self.offsets.list_offsets(queries, isolation).await
    }
    async fn committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<PartitionResults<Option<Offset>>, Error> {
        self.offsets.committed_offsets(group, partitions).await
    }
    async fn record_timestamps(
        &self,
        positions: &[(TopicPartition, Offset)],
    ) -> Result<Vec<(TopicPartition, Option<Timestamp>)>, Error> {
        self.offsets.record_timestamps(positions).await
    }
}

#[async_trait]
impl GroupQuery for MockClusterQuery {
    async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        self.groups.list_groups().await
    }
    async fn describe_groups(&self, groups: &[String]) -> Result<Vec<GroupDescription>, Error> {
        self.groups.describe_groups(groups).await
    }
    async fn group_offsets(&self, group: &str) -> Result<GroupOffsetMap, Error> {
        self.groups.group_offsets(group).await
    }
}
