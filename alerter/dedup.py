"""A bounded set of recently mailed event ids."""

from collections import OrderedDict


class RecentIds:
    """The last `capacity` event ids added, forgetting the oldest first.

    Lookups and additions cost O(1). The set lives in memory only.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> None:
        """Remember `event_id` as the newest, evicting the oldest id when full."""
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
