use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
pub struct TaskPool {
    sharing: Arc<Sharing>,
}

struct Sharing {
    // list of the tasks to be done by worker threads
    todo: Mutex<Todo>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,
}

/// wxmp patch: idle threads are counted under the queue's lock, and a task handed to one takes
/// it off the count at once. Upstream counted a woken thread as waiting until it ran, so a burst
/// of connections was queued behind busy threads (long-lived connections) instead of getting
/// new ones, and waited until some other connection ended.
struct Todo {
    tasks: VecDeque<Box<dyn FnMut() + Send>>,
    /// Threads waiting for a task, less the tasks already queued for them.
    idle: usize,
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

/// wxmp patch: stack size of the pool's threads.
const STACK_SIZE: usize = 256 * 1024;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

impl TaskPool {
    pub fn new() -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(Todo {
                    tasks: VecDeque::new(),
                    idle: 0,
                }),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
            }),
        };

        // wxmp patch: spare threads are an optimisation; the pool works without them.
        for _ in 0..MIN_THREADS {
            let _ = pool.add_thread(None);
        }

        pool
    }

    /// Executes a function in a thread.
    /// If no thread is available, spawns a new one.
    ///
    /// wxmp patch: fails (dropping `code`) when the OS refuses a new thread; upstream panicked,
    /// on the accept thread, which closed the port for good.
    pub fn spawn(&self, code: Box<dyn FnMut() + Send>) -> std::io::Result<()> {
        let mut todo = self.sharing.todo.lock().unwrap_or_else(|e| e.into_inner());

        if todo.idle == 0 {
            drop(todo);
            self.add_thread(Some(code))
        } else {
            todo.idle -= 1;
            todo.tasks.push_back(code);
            self.sharing.condvar.notify_one();
            Ok(())
        }
    }

    fn add_thread(&self, initial_fn: Option<Box<dyn FnMut() + Send>>) -> std::io::Result<()> {
        let sharing = self.sharing.clone();

        let body = move || {
            let sharing = sharing;
            let _active_guard = Registration::new(&sharing.active_tasks);

            if let Some(mut f) = initial_fn {
                f();
            }

            loop {
                let mut task: Box<dyn FnMut() + Send> = {
                    let mut todo = sharing.todo.lock().unwrap_or_else(|e| e.into_inner());
                    todo.idle += 1;

                    let task;
                    loop {
                        // A queued task was counted off `idle` when it was queued.
                        if let Some(poped_task) = todo.tasks.pop_front() {
                            task = poped_task;
                            break;
                        }

                        let received =
                            if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS {
                                todo = sharing
                                    .condvar
                                    .wait(todo)
                                    .unwrap_or_else(|e| e.into_inner());
                                true
                            } else {
                                let (new_lock, waitres) = sharing
                                    .condvar
                                    .wait_timeout(todo, Duration::from_millis(5000))
                                    .unwrap_or_else(|e| e.into_inner());
                                todo = new_lock;
                                !waitres.timed_out()
                            };

                        if !received && todo.tasks.is_empty() {
                            todo.idle -= 1;
                            return;
                        }
                    }

                    task
                };

                task();
            }
        };

        // wxmp patch: a connection's thread needs little stack (a small one keeps thousands of
        // connections cheap in address space), and a refused spawn is an error, not a panic.
        thread::Builder::new().stack_size(STACK_SIZE).spawn(body)?;
        Ok(())
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}
