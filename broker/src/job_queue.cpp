#include <cassert>

#include "dispatch/broker/detail/job.hpp"

namespace dispatch::broker::detail {

void JobList::push_back(Job& job) noexcept {
  assert(job.list == nullptr);
  job.prev = tail_;
  job.next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = &job;
  } else {
    head_ = &job;
  }
  tail_ = &job;
  job.list = this;
  ++size_;
}

void JobList::push_front(Job& job) noexcept {
  assert(job.list == nullptr);
  job.prev = nullptr;
  job.next = head_;
  if (head_ != nullptr) {
    head_->prev = &job;
  } else {
    tail_ = &job;
  }
  head_ = &job;
  job.list = this;
  ++size_;
}

void JobList::erase(Job& job) noexcept {
  assert(job.list == this);
  if (job.prev != nullptr) {
    job.prev->next = job.next;
  } else {
    head_ = job.next;
  }
  if (job.next != nullptr) {
    job.next->prev = job.prev;
  } else {
    tail_ = job.prev;
  }
  job.prev = job.next = nullptr;
  job.list = nullptr;
  --size_;
}

Job* JobList::pop_front() noexcept {
  Job* job = head_;
  if (job != nullptr) erase(*job);
  return job;
}

void ClassQueue::push(Job& job, std::string_view client) {
  auto found = by_client_.find(client);
  Ring::iterator fifo;
  if (found == by_client_.end()) {
    // A client that starts waiting joins at the back of the ring: everyone already waiting
    // is served once before it.
    ring_.emplace_back();
    fifo = std::prev(ring_.end());
    fifo->client = std::string(client);
    by_client_.emplace(fifo->client, fifo);
  } else {
    fifo = found->second;
  }
  fifo->jobs.push_back(job);
  job.fifo = &*fifo;
  job.queued_in = this;
  job.urgent = false;
  ++size_;
}

void ClassQueue::push_urgent(Job& job) {
  urgent_.push_back(job);
  job.fifo = nullptr;
  job.queued_in = this;
  job.urgent = true;
  ++size_;
}

Job* ClassQueue::peek() const noexcept {
  if (!urgent_.empty()) return urgent_.front();
  if (ring_.empty()) return nullptr;
  return ring_.front().jobs.front();
}

Job* ClassQueue::pop() {
  Job* job = peek();
  if (job == nullptr) return nullptr;
  if (job->fifo != nullptr && job->fifo->jobs.size() > 1) {
    // The client keeps waiting: it goes to the back of the ring (round-robin). peek() took
    // the job from the ring's front.
    ring_.splice(ring_.end(), ring_, ring_.begin());
  }
  erase(*job);
  return job;
}

void ClassQueue::erase(Job& job) {
  assert(job.queued_in == this);
  ClientFifo* fifo = job.fifo;
  job.list->erase(job);
  job.fifo = nullptr;
  job.queued_in = nullptr;
  --size_;
  if (fifo != nullptr) drop_if_empty(*fifo);
}

void ClassQueue::drop_if_empty(ClientFifo& fifo) {
  if (!fifo.jobs.empty()) return;
  auto it = by_client_.find(fifo.client);
  if (it == by_client_.end()) return;
  Ring::iterator node = it->second;
  by_client_.erase(it);
  ring_.erase(node);
}

void ProviderQueue::push(Job& job, std::string_view client) {
  classes_[static_cast<std::size_t>(job.priority)].push(job, client);
  ++size_;
}

void ProviderQueue::push_urgent(Job& job) {
  classes_[static_cast<std::size_t>(job.priority)].push_urgent(job);
  ++size_;
}

Job* ProviderQueue::peek() const noexcept {
  for (const ClassQueue& queue : classes_) {
    if (Job* job = queue.peek()) return job;
  }
  return nullptr;
}

Job* ProviderQueue::pop() {
  for (ClassQueue& queue : classes_) {
    if (Job* job = queue.pop()) {
      --size_;
      return job;
    }
  }
  return nullptr;
}

void ProviderQueue::erase(Job& job) {
  job.queued_in->erase(job);
  --size_;
}

}  // namespace dispatch::broker::detail
